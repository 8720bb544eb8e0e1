"""Shared test fixtures: the reference outputs in ../shared and a fresh results DB."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# `python -m pytest` puts the repository root on sys.path, where the top-level folders
# (kernels/, models/, tasks/, ...) shadow installed distributions of the same name:
# transformers >= 5.25 imports Hugging Face's `kernels` package and got kernels/ (which is
# harness.kernels) instead. The project's code is imported as harness.* from the install.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
REFERENCE = REPO.parent / "shared" / "reference" / "llava-v1.5-13b"


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference outputs not found at {REFERENCE}")
    return REFERENCE
