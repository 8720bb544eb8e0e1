"""``harness leaderboard``: model x precision table with drops against a base run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.common import open_store
from harness.console import emit, say


def register(sub: Any) -> None:
    p = sub.add_parser("leaderboard", help="model x precision table with drops vs a base")
    p.add_argument("--db")
    p.add_argument(
        "--base",
        help="what drops are measured against: a precision label (fp16, ...), or one run (id "
        "or MODEL@PRECISION); default: each model's unquantized run (fp16, else bf16, else fp32)",
    )
    p.add_argument("--tasks", help="comma list of tasks/groups (default: all in the DB)")
    p.add_argument("--metric", help="metric to show (default: each task's primary)")
    p.add_argument("--format", choices=["markdown", "csv", "html"], default="markdown")
    p.add_argument("--out", help="write the table here instead of stdout")
    p.add_argument("--plot", help="write a PNG bar chart of the drops")
    p.set_defaults(fn=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.results.leaderboard import build_leaderboard, plot_drops, render

    store = open_store(args, must_exist=True)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    board = build_leaderboard(store, base=args.base, tasks=tasks, metric=args.metric)
    text = render(board, args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        say(f"wrote {args.out}")
    else:
        emit(text)
    if args.plot:
        plot_drops(board, Path(args.plot))
        say(f"wrote {args.plot}")
    return 0
