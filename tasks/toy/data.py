"""Where the toy world lives, and building it once (atomically) on first use.

The ``*-toy`` tasks name :func:`root` as their ``dataset.root`` hook, so they
need no ``--data-root``: the first task that loads builds the whole evaluation
world (a few seconds) into ``$HARNESS_TOY_DIR`` or
``~/.cache/vlm-harness/toy-world/v{WORLD_VERSION}``, one folder per benchmark.
The world is built in a temporary folder next to its final place and renamed
into place, so a reader never sees half a world; when two processes race, the
first rename wins and the other uses its world. A world written by another
version of the generator (its manifest records a fingerprint of the generator's
source) is rebuilt the same way, so a cache never serves stale data.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

from .benchmarks import EVAL_DOCS, WRITERS

WORLD_VERSION = 1
WORLD_SEED = 1234
ENV_DIR = "HARNESS_TOY_DIR"
MANIFEST = "world.json"
SUFFIX = "-toy"
_READY: set[Path] = set()


def default_dir() -> Path:
    return Path.home() / ".cache" / "vlm-harness" / "toy-world" / f"v{WORLD_VERSION}"


def world_dir() -> Path:
    """``$HARNESS_TOY_DIR`` when set, else the per-user cache folder."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else default_dir()


def benchmark_of(task_name: str) -> str:
    """The world folder of a toy task: ``pope_random-toy`` -> ``pope``."""
    if not task_name.endswith(SUFFIX):
        raise HarnessError(f"{task_name!r} is not a toy task (toy task names end in {SUFFIX!r})")
    base = task_name[: -len(SUFFIX)]
    for bench in WRITERS:
        if base == bench or base.startswith(bench + "_"):
            return bench
    raise HarnessError(f"toy task {task_name!r} names no benchmark of the toy world")


def root(task_name: str, options: dict[str, Any]) -> Path:
    """``dataset.root`` hook of the toy tasks: that benchmark's folder in the world."""
    return ensure_world() / benchmark_of(task_name)


def ensure_world(path: Path | None = None) -> Path:
    """The world folder, generated first when it does not hold a complete world."""
    path = (path or world_dir()).absolute()
    if path in _READY:
        return path
    generate_world(path)
    _READY.add(path)
    return path


def fingerprint() -> str:
    """Hash of the generator's source: a world written by other code is rebuilt."""
    digest = hashlib.sha256(str(WORLD_VERSION).encode())
    for module in ("world.py", "benchmarks.py", "data.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()[:16]


def _state(path: Path) -> str:
    """``complete``, ``stale`` (a world of another generator) or ``missing``."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "missing"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "stale"
    ok = isinstance(data, dict) and data.get("version") == WORLD_VERSION
    return "complete" if ok and data.get("fingerprint") == fingerprint() else "stale"


def _complete(path: Path) -> bool:
    return _state(path) == "complete"


def build_world(out: Path) -> dict[str, Any]:
    """Write every benchmark of the evaluation world under ``out`` (which must be empty)
    and return the manifest (also written to ``out/world.json``, last)."""
    for bench, writer in WRITERS.items():
        writer(out / bench, random.Random(f"eval:{bench}:{WORLD_SEED}"), True, EVAL_DOCS[bench])
    files = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "version": WORLD_VERSION,
        "seed": WORLD_SEED,
        "generator": "harness.tasks.toy",
        "fingerprint": fingerprint(),
        "docs": EVAL_DOCS,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def generate_world(out_dir: Path) -> Path:
    """Build the evaluation world at ``out_dir`` unless a complete one is there already.

    ``out_dir`` may be missing, an empty folder or a world of another generator version
    (replaced); any other folder is refused. The world is built next to it and renamed
    into place (atomic; a concurrent winner is kept).
    """
    out_dir = Path(out_dir).expanduser().absolute()
    state = _state(out_dir)
    if state == "complete":
        return out_dir
    if state == "missing" and out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise HarnessError(
                f"{out_dir} exists and is not a toy world; give an empty or new folder "
                f"(or unset ${ENV_DIR})"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    old = out_dir.parent / f".{out_dir.name}.stale-{os.getpid()}-{tmp.name[-8:]}"
    try:
        build_world(tmp)
        try:
            if state == "stale":
                os.rename(out_dir, old)
            os.rename(tmp, out_dir)  # replaces a missing or empty folder atomically
        except OSError:
            if not _complete(out_dir):
                raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return out_dir
