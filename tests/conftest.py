"""Shared test fixtures: the reference outputs in ../shared and a fresh results DB."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
# `python -m pytest` puts the repository root on sys.path, where the top-level folders
# (kernels/, models/, ...) could shadow installed packages of the same name; their
# __init__ files defer to the installed package then (harness.shadowing), which the whole
# suite exercises, since transformers imports Hugging Face's `kernels`.
REFERENCE = REPO.parent / "shared" / "reference" / "llava-v1.5-13b"
BENCHMARKS = REPO / "benchmarks"


@contextmanager
def _benchmark_script(name: str) -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], AbstractContextManager[ModuleType]]:
    """Imports a script of benchmarks/ as a module (``with benchmark_script(name) as m``),
    with its folder on sys.path meanwhile, as when it runs, so it can import its neighbours."""
    return _benchmark_script


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference outputs not found at {REFERENCE}")
    return REFERENCE
