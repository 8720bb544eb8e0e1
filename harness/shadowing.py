"""Top-level folders of a checkout that are also names of installed packages.

The package's folders (``kernels/``, ``models/``, ``tasks/`` ...) are imported
as ``harness.kernels`` etc. From a checkout's root, where Python puts the
current directory first on ``sys.path``, ``import kernels`` would find the
folder instead of Hugging Face's ``kernels`` package, which transformers
imports. Each folder's ``__init__`` calls :func:`defer_to_installed` when it
is imported under its bare name: the installed package of that name takes its
place, or the import fails as if the folder were not there.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def defer_to_installed(name: str, init_file: str) -> None:
    """Replace ``sys.modules[name]`` (this folder) with the installed package ``name``."""
    root = Path(init_file).resolve().parent.parent
    paths = [p for p in sys.path if Path(p or os.getcwd()).resolve() != root]
    spec = importlib.machinery.PathFinder.find_spec(name, paths)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(
            f"No module named {name!r} (the folder {root / name} is harness.{name}, "
            "not a top-level package)",
            name=name,
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the import statement returns what sys.modules holds
    spec.loader.exec_module(module)
