"""``harness gate``: exit 1 when a candidate run loses more accuracy than allowed."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from harness.cli.common import finite_float, non_negative_int, open_store, probability
from harness.console import emit, show
from harness.errors import EXIT_GATE_FAILED


def register(sub: Any) -> None:
    p = sub.add_parser("gate", help="exit 1 when the candidate run loses too much accuracy")
    p.add_argument("--db")
    p.add_argument("--base", required=True, help="run id, id prefix, or MODEL@PRECISION")
    p.add_argument("--candidate", required=True, help="run id, id prefix, or MODEL@PRECISION")
    p.add_argument(
        "--max-drop",
        type=finite_float,
        default=1.0,
        help="largest allowed drop of the primary metric (points)",
    )
    p.add_argument(
        "--relative", action="store_true", help="--max-drop is a percentage of the base value"
    )
    p.add_argument("--tasks", help="comma list of tasks (default: every task of the two runs)")
    p.add_argument(
        "--alpha", type=probability, default=0.05, help="significance level of the paired test"
    )
    p.add_argument(
        "--require-significance",
        action="store_true",
        help="fail only when the drop is also significant",
    )
    p.add_argument(
        "--bootstrap", type=non_negative_int, default=1000, help="paired bootstrap resamples"
    )
    p.add_argument("--metric", help="metric to compare (default: each task's primary)")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="compare runs although documents of theirs have no answer",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    from harness.results.gate import run_gate

    store = open_store(args, must_exist=True)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    report = run_gate(
        store,
        base=args.base,
        candidate=args.candidate,
        max_drop=args.max_drop,
        relative=args.relative,
        tasks=tasks,
        alpha=args.alpha,
        require_significance=args.require_significance,
        n_boot=args.bootstrap,
        metric=args.metric,
        allow_missing=args.allow_missing,
    )
    if args.json:
        emit(report.to_json())
    else:
        show(report.table())
        show(
            Text("PASS", style="bold green")
            if report.passed
            else Text.assemble(("FAIL", "bold red"), ": " + report.summary())
        )
    return 0 if report.passed else EXIT_GATE_FAILED
