"""``harness models``: the model registry."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import emit_json
from harness.console import show


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models.registry import ENTRIES

    if args.json:
        emit_json([e.__dict__ for e in ENTRIES], default=str)
        return 0
    table = Table(title=f"{len(ENTRIES)} models")
    for col in ("model", "adapter", "family", "template", "weights", "description"):
        table.add_column(col, overflow="fold")
    for e in ENTRIES:
        table.add_row(
            e.name, e.adapter, e.family, e.template or "(processor)", e.source, Text(e.description)
        )
    show(table)
    return 0
