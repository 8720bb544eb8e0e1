"""``harness toy-data``: write the synthetic world's mini benchmarks to a folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from harness.console import say


def register(sub: Any) -> None:
    p = sub.add_parser("toy-data", help="write the synthetic world's mini benchmarks to a folder")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_toy_data)


def cmd_toy_data(args: argparse.Namespace) -> int:
    from harness.tasks.toy.data import generate_world

    start = time.perf_counter()
    out = generate_world(Path(args.out))
    say(f"wrote the synthetic world to {out} in {time.perf_counter() - start:.1f}s")
    return 0
