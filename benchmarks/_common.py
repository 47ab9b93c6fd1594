"""Shared helpers for the benchmark scripts: timing, machine description, result tables."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(
    fn: Callable[[], object], *, repeats: int, warmup: int, sync: Callable[[], None]
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_times(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median wall time of each function, timing them round-robin so that slow drifts in the
    machine's load hit every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_header(device: torch.device, packages: list[str]) -> list[str]:
    """Markdown lines describing the command, machine, versions and date."""
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{cpu_model()}, {os.cpu_count()} logical cores"
    versions = ", ".join(f"{p} {package_version(p)}" for p in packages)
    return [
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {hardware}; torch threads: {torch.get_num_threads()}; device: {device}",
        f"- python {platform.python_version()}, torch {torch.__version__}, {versions}",
        f"- manifoldflows revision: {git_revision()}",
        f"- load average at start (1/5/15 min): {load_average()}",
    ]


def load_average() -> str:
    """The machine's load average, to judge how quiet it was during a timing run."""
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_result(name: str, lines: list[str]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_increase_mib(fn: Callable[[], object]) -> float:
    """Peak resident-memory increase (MiB) while ``fn()`` runs, in this process (Linux >= 4.0:
    resets the kernel's peak-RSS counter first; run it in a fresh process per measurement)."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) / 1024
