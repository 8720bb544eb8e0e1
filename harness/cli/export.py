"""``harness export``: an eval-server submission file from a stored run or a predictions file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.common import (
    add_allow_extra,
    add_allow_missing,
    kv_list,
    open_store,
    overrides_per_task,
)
from harness.console import error, say
from harness.errors import EXIT_INCOMPLETE, HarnessError


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write an eval-server submission file")
    p.add_argument("task")
    p.add_argument("--out", required=True)
    p.add_argument("--run", help="run id (or MODEL@PRECISION) in --db to export")
    p.add_argument("--db")
    p.add_argument("--predictions", help="export from a predictions file instead of a run")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--data-file", action="append", metavar="ROLE=PATH")
    add_allow_missing(p)
    add_allow_extra(p)
    p.set_defaults(fn=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from harness.api.requests import is_answer
    from harness.predictions import match_predictions, read_predictions
    from harness.results.export import export_task
    from harness.task import get_task

    task = get_task(args.task)
    overrides = overrides_per_task([task], kv_list(args.data_file, "--data-file"))[task.name]
    docs, files = task.load_docs(Path(args.data_root) if args.data_root else None, overrides)
    if args.predictions and args.run:
        raise HarnessError("export takes --run RUN or --predictions FILE, not both")
    if args.predictions:
        match = match_predictions(
            task, docs, read_predictions(args.predictions), allow_extra=args.allow_extra
        )
        outputs = match.outputs
    elif args.run:
        store = open_store(args, must_exist=True)
        outputs = {s["doc_id"]: s["raw_output"] for s in store.run_samples(args.run, task.name)}
    else:
        raise HarnessError("export needs --run RUN (from --db) or --predictions FILE")
    answered = {d: t for d, t in outputs.items() if is_answer(t)}
    rows = export_task(task, docs, answered, Path(args.out), files)
    missing = sum(1 for d in docs if d["doc_id"] not in answered)
    say(
        f"wrote {rows} rows to {args.out}"
        + (f" ({missing} documents had no answer)" if missing else "")
    )
    if missing and not args.allow_missing:
        error(
            f"{missing} of {len(docs)} documents have no answer, so the file is incomplete "
            "(pass --allow-missing to accept it)"
        )
        return EXIT_INCOMPLETE
    return 0
