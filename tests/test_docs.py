"""The documentation stays true: API pages match the code, and every example runs.

* ``docs/api/*.md`` must equal what ``docs/generate_api.py`` generates from the docstrings.
* Every ```` ```python ```` block of the hand-written pages (``docs/**/*.md`` outside
  ``docs/api``) is executed. The
  blocks of one page run in order in one namespace, like a notebook session, in a temporary
  working directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import time
import types
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Hand-written pages: everything under docs/ except the generated API reference.
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] != "api")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
# The examples use tiny tensors, for which extra intra-op threads only add synchronisation: on a
# busy 2-core machine 2 threads made them 10-50x slower (2-20 s) than 1 thread (0.3-0.6 s).
THREADS = 1


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_api", DOCS / "generate_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every python fence of a markdown page."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def test_api_pages_are_up_to_date():
    stale = load_generator().stale_pages()
    assert not stale, (
        "docs/api is out of date with the docstrings: "
        + ", ".join(stale)
        + ". Regenerate it with `python docs/generate_api.py` and commit the result."
    )


def test_there_are_examples():
    assert {p.name for p in PAGES} >= {"index.md", "installation.md", "concepts.md"}
    assert python_blocks(DOCS / "concepts.md")


@pytest.fixture(scope="module")
def elapsed():
    # One-time imports (torch.optim pulls in torch._dynamo, plotting pulls in matplotlib) cost
    # seconds on a cold interpreter; pay them here so the limit measures the examples only.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    importlib.import_module("manifoldflows.plotting")
    importlib.import_module("matplotlib.figure")
    times: list[float] = []
    yield times  # recorded for --durations-style inspection; speed is not asserted in tests


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_examples_run(page: Path, tmp_path, monkeypatch, elapsed):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    # A real module, so that classes defined in examples can be pickled (torch.save).
    name = page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "_")
    module = types.ModuleType(f"docs_example_{name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    start = time.perf_counter()
    try:
        for line, code in python_blocks(page):
            where = page.relative_to(DOCS.parent).as_posix()
            try:
                # pad so that tracebacks show the line numbers of the page
                source = "\n" * (line - 1) + code
                exec(compile(source, where, "exec"), namespace)
            except Exception as err:
                where = f"{where} line {line}"
                raise AssertionError(
                    f"the example at {where} fails: {type(err).__name__}: {err}"
                ) from err
    finally:
        torch.set_num_threads(threads)
        elapsed.append(time.perf_counter() - start)
