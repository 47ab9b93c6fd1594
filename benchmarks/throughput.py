"""Throughput of NSF (coupling) and MAF (affine) flows: manifoldflows vs zuko, normflows, nflows.

Each library builds the same architecture with its own classes: 8 layers, conditioner MLPs with
two hidden layers of 128 units, 8 spline bins on [-5, 5] with linear tails (NSF), batch 1024,
dimensions 2, 32 and 66. Timed cells (median over repeats after warm-up, one thread count for
all): ``log_prob`` forward (no grad), ``log_prob`` forward+backward, ``sample`` and
``sample_and_log_prob`` (no grad). Peak memory of one forward+backward is measured in a fresh
subprocess per cell (CPU: peak RSS increase; CUDA: max allocated).

Run (after ``make baselines``)::

    .venv/bin/python benchmarks/throughput.py            # full table -> results/throughput.md
    .venv/bin/python benchmarks/throughput.py --quick    # fewer repeats, no file written
    .venv/bin/python benchmarks/throughput.py --reference b38ab97   # + our own earlier commit

``--reference REV`` extracts ``manifoldflows/`` at git revision ``REV`` as the package
``manifoldflows_reference`` and times it round-robin with the others (column ``before``), so a
refactoring is compared with the code it replaced in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    interleaved_median_times,
    machine_header,
    markdown_table,
    peak_rss_increase_mib,
    write_result,
)

LAYERS, HIDDEN, BINS, BOUND, BATCH = 8, 128, 8, 5.0, 1024
DIMS = (2, 32, 66)
ARCHS = ("nsf", "maf")
LIBRARIES = ("manifoldflows", "zuko", "normflows", "nflows")
CELLS = ("log_prob", "log_prob+backward", "sample", "sample_and_log_prob")


@dataclass
class Model:
    """Uniform interface over the libraries' flows."""

    module: torch.nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int], torch.Tensor]
    sample_and_log_prob: Callable[[int], tuple[torch.Tensor, torch.Tensor]]


REFERENCE = "manifoldflows_reference"
REFERENCE_REVISION: list[str] = []  # set by --reference


def install_reference(revision: str) -> None:
    """Make ``manifoldflows`` at git ``revision`` importable as :data:`REFERENCE`."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", revision, "manifoldflows"],
        capture_output=True,
        check=True,
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="mf_reference_"))
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    (target / "manifoldflows").rename(target / REFERENCE)
    sys.path.insert(0, str(target))


def build_manifoldflows(arch: str, d: int, package: str = "manifoldflows") -> Model:
    presets = importlib.import_module(f"{package}.presets")
    MAF, NSF = presets.MAF, presets.NSF

    if arch == "nsf":
        flow = NSF(d, layers=LAYERS, hidden=(HIDDEN, HIDDEN), bins=BINS, bound=BOUND)
    else:
        flow = MAF(d, layers=LAYERS, hidden=(HIDDEN, HIDDEN))
    return Model(
        flow,
        flow.log_prob,
        lambda n: flow.sample((n,)),
        lambda n: flow.sample_and_log_prob((n,)),
    )


def build_zuko(arch: str, d: int) -> Model:
    import zuko

    if arch == "nsf":
        flow = zuko.flows.NSF(
            d, bins=BINS, transforms=LAYERS, hidden_features=(HIDDEN, HIDDEN), passes=2
        )
    else:
        flow = zuko.flows.MAF(d, transforms=LAYERS, hidden_features=(HIDDEN, HIDDEN))
    return Model(
        flow,
        lambda x: flow().log_prob(x),
        lambda n: flow().sample((n,)),
        lambda n: flow().rsample_and_log_prob((n,)),
    )


def build_normflows(arch: str, d: int) -> Model:
    import normflows as nf

    class DensityDirection(nf.flows.Flow):
        """normflows' autoregressive layers run their one-pass direction when sampling (IAF);
        swapping the directions gives the MAF of the other libraries."""

        def __init__(self, flow):
            super().__init__()
            self.flow = flow

        def forward(self, z, context=None):
            return self.flow.inverse(z)

        def inverse(self, x, context=None):
            return self.flow.forward(x)

    layers = []
    for i in range(LAYERS):
        if arch == "nsf":
            layers.append(
                nf.flows.CoupledRationalQuadraticSpline(
                    d, 1, HIDDEN, num_bins=BINS, tail_bound=BOUND, reverse_mask=i % 2 == 1
                )
            )
        else:
            layers.append(
                DensityDirection(
                    nf.flows.MaskedAffineAutoregressive(
                        d, HIDDEN, num_blocks=1, use_residual_blocks=False
                    )
                )
            )
        if i < LAYERS - 1:
            layers.append(nf.flows.Permute(d, mode="shuffle" if arch == "nsf" else "swap"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), layers)
    return Model(model, model.log_prob, lambda n: model.sample(n)[0], model.sample)


def build_nflows(arch: str, d: int) -> Model:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        RandomPermutation,
        ReversePermutation,
    )

    class ConditionerMLP(MLP):
        def forward(self, inputs, context=None):  # nflows' coupling passes a context
            return super().forward(inputs)

    transforms = []
    for i in range(LAYERS):
        if arch == "nsf":
            mask = torch.arange(d) >= d // 2 if i % 2 == 0 else torch.arange(d) < d // 2
            transforms.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask.int(),
                    lambda n_in, n_out: ConditionerMLP((n_in,), (n_out,), [HIDDEN, HIDDEN]),
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                )
            )
        else:
            transforms.append(
                MaskedAffineAutoregressiveTransform(
                    d, HIDDEN, num_blocks=1, use_residual_blocks=False
                )
            )
        if i < LAYERS - 1:
            transforms.append(RandomPermutation(d) if arch == "nsf" else ReversePermutation(d))
    flow = Flow(CompositeTransform(transforms), StandardNormal((d,)))
    return Model(flow, flow.log_prob, flow.sample, flow.sample_and_log_prob)


BUILDERS = {
    "manifoldflows": build_manifoldflows,
    "zuko": build_zuko,
    "normflows": build_normflows,
    "nflows": build_nflows,
}


def perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every library off its identity initialisation (same noise scale for all)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))


def build(lib: str, arch: str, d: int, device: torch.device) -> tuple[Model, torch.Tensor]:
    torch.manual_seed(0)
    model = BUILDERS[lib](arch, d)
    model.module.to(device)
    perturb(model.module, 0)
    x = torch.randn(BATCH, d, device=device) * 0.8
    return model, x


def cell_function(model: Model, x: torch.Tensor, cell: str) -> Callable[[], object]:
    n = x.shape[0]

    def forward():
        with torch.no_grad():
            return model.log_prob(x)

    def backward():
        model.module.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()

    def sample():
        with torch.no_grad():
            return model.sample(n)

    def sample_and_log_prob():
        with torch.no_grad():
            return model.sample_and_log_prob(n)

    return {
        "log_prob": forward,
        "log_prob+backward": backward,
        "sample": sample,
        "sample_and_log_prob": sample_and_log_prob,
    }[cell]


def available(lib: str) -> bool:
    try:
        __import__(REFERENCE if lib == "before" else lib)
        return True
    except ImportError:
        return False


# ----------------------------------------------------------------------------- memory
def memory_worker(lib: str, arch: str, d: int, device: torch.device) -> float:
    """Peak extra memory (MiB) of one forward+backward, in this fresh process."""
    model, x = build(lib, arch, d, device)
    step = cell_function(model, x, "log_prob+backward")
    if device.type == "cuda":
        step()
        model.module.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return peak_rss_increase_mib(step)


def measure_memory(lib: str, arch: str, d: int, device: torch.device, threads: int) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", lib, arch, str(d), "--device", str(device)]
    if lib == "before":
        cmd += ["--reference", REFERENCE_REVISION[0]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 repeats, no results file")
    parser.add_argument("--memory-worker", nargs=3, metavar=("LIB", "ARCH", "DIM"))
    parser.add_argument("--reference", help="git revision of manifoldflows to time as 'before'")
    args = parser.parse_args()
    if args.reference:
        install_reference(args.reference)
        REFERENCE_REVISION.append(args.reference)
        BUILDERS["before"] = lambda arch, d: build_manifoldflows(arch, d, REFERENCE)
        args.libraries = [*args.libraries, "before"]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if args.memory_worker:
        lib, arch, d = args.memory_worker
        print(json.dumps({"mib": memory_worker(lib, arch, int(d), device)}))
        return
    if args.quick:
        args.repeats, args.warmup = 3, 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    libs = [lib for lib in args.libraries if available(lib)]
    peers = [lib for lib in libs if lib not in ("manifoldflows", "before")]
    header = ["flow", "d", "cell"] + [f"{lib} (ms)" for lib in libs] + ["speed-up vs fastest peer"]
    if "before" in libs:
        header.append(f"vs {args.reference}")
    rows, misses = [], []
    for arch in args.archs:
        for d in args.dims:
            models = {lib: build(lib, arch, d, device) for lib in libs}
            for cell in CELLS:
                fns = {lib: cell_function(*models[lib], cell) for lib in libs}
                times = interleaved_median_times(
                    fns, repeats=args.repeats, warmup=args.warmup, sync=sync
                )
                best_peer = min((times[p] for p in peers), default=math.nan)
                speedup = (
                    best_peer / times["manifoldflows"] if "manifoldflows" in times else math.nan
                )
                if speedup < 1.2:
                    misses.append(f"{arch} d={d} {cell}: {speedup:.2f}x")
                row = [arch.upper(), str(d), cell] + [f"{1e3 * times[lib]:.2f}" for lib in libs]
                row.append(f"{speedup:.2f}x")
                if "before" in times:
                    row.append(f"{times['before'] / times['manifoldflows']:.2f}x")
                rows.append(row)
                print(" | ".join(row), flush=True)
            if not args.no_memory:
                mem = {lib: measure_memory(lib, arch, d, device, args.threads) for lib in libs}
                best_peer = min((mem[p] for p in peers), default=math.nan)
                ratio = best_peer / mem["manifoldflows"] if "manifoldflows" in mem else math.nan
                row = [arch.upper(), str(d), "peak MiB fwd+bwd"] + [
                    f"{mem[lib]:.1f}" for lib in libs
                ]
                row.append(f"{ratio:.2f}x less" if ratio >= 1 else f"{1 / ratio:.2f}x more")
                if "before" in mem:
                    row.append(f"{mem['before'] / mem['manifoldflows']:.2f}x")
                rows.append(row)
                print(" | ".join(row), flush=True)
    lines = [
        "# Throughput: manifoldflows vs zuko, normflows, nflows",
        "",
        *machine_header(device, ["zuko", "normflows", "nflows"]),
        f"- batch {BATCH}, {LAYERS} layers, MLP conditioners 2 x {HIDDEN}, NSF: {BINS} bins on "
        f"[-{BOUND:g}, {BOUND:g}]; median of {args.repeats} runs after {args.warmup} warm-up runs, "
        "libraries timed round-robin",
        "- times in milliseconds; speed-up = fastest peer's time / ours (target >= 1.2x); memory "
        "row: peak extra memory of one log_prob forward+backward in a fresh process",
        "",
        *markdown_table(header, rows),
        "",
        "Cells below the 1.2x target: " + (", ".join(misses) if misses else "none"),
    ]
    print("\n".join(lines[-1:]))
    if not args.quick:
        print("wrote", write_result("throughput.md", lines))


if __name__ == "__main__":
    main()
