"""``harness models``: the model registry, each entry with its eval profile."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import emit_json
from harness.console import emit, show


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="list the model registry and each model's eval profile")
    p.add_argument("name", nargs="?", help="show one model's whole eval profile")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--fidelity",
        action="store_true",
        help="print the fidelity table (profile aspect -> official source, status) as markdown",
    )
    p.set_defaults(fn=cmd_models)


def _entry_dict(entry: Any) -> dict[str, Any]:
    out = {k: v for k, v in entry.__dict__.items() if k != "profile"}
    out["profile"] = entry.eval_profile.as_dict()
    return out


def _summary(profile: Any) -> str:
    gen = profile.generation.settings
    sampled = f"T={gen['temperature']}" if gen.get("temperature") else "greedy"
    per_task = ", ".join(profile.task_generation)
    flagged = [k for k, a in profile.aspects().items() if a.status != "matched"]
    text = f"{profile.name}: {sampled}" + (f" (+{per_task})" if per_task else "")
    return text + (f"; differs/unverified: {', '.join(flagged)}" if flagged else "")


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models.registry import ENTRIES, get_entry

    if args.fidelity:
        from harness.models.fidelity import fidelity_markdown

        emit(fidelity_markdown())
        return 0
    if args.name:
        entry = get_entry(args.name)
        if args.json:
            emit_json(_entry_dict(entry), default=str)
            return 0
        profile = entry.eval_profile
        table = Table(title=f"{entry.name}: eval profile {profile.name}")
        for col in ("aspect", "settings", "status", "source"):
            table.add_column(col, overflow="fold")
        for key, aspect in profile.aspects().items():
            settings = ", ".join(f"{k}={v!r}" for k, v in aspect.settings.items()) or "-"
            status = aspect.status + (f": {aspect.note}" if aspect.note else "")
            table.add_row(key, Text(settings), Text(status), Text(aspect.source))
        show(table)
        return 0
    if args.json:
        emit_json([_entry_dict(e) for e in ENTRIES], default=str)
        return 0
    table = Table(title=f"{len(ENTRIES)} models (`harness models NAME` for a whole eval profile)")
    for col in ("model", "adapter", "template", "eval profile", "weights", "description"):
        table.add_column(col, overflow="fold")
    for e in ENTRIES:
        table.add_row(
            e.name,
            e.adapter,
            e.template or "(processor)",
            Text(_summary(e.eval_profile)),
            e.source,
            Text(e.description),
        )
    show(table)
    return 0
