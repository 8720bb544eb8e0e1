"""``harness tasks``: every task and group with its data files, metrics and rules."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import emit_json
from harness.console import show


def register(sub: Any) -> None:
    p = sub.add_parser("tasks", help="list every task and group with its data files and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tasks)


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.registry import default_registry

    registry = default_registry()
    if args.json:
        payload = {
            "tasks": {
                name: {
                    "tags": cfg.tag,
                    "version": cfg.version,
                    "files": cfg.dataset.files,
                    "optional_files": cfg.dataset.optional,
                    "metrics": [m.name for m in cfg.metrics],
                    "primary": cfg.primary_metric.name,
                    "missing": cfg.missing,
                    "judge": cfg.judge.model if cfg.judge else None,
                    "export": cfg.export.format if cfg.export else None,
                }
                for name, cfg in sorted(registry.tasks.items())
            },
            "groups": {name: registry.expand(name) for name in sorted(registry.groups)},
        }
        emit_json(payload)
        return 0
    table = Table(title=f"{len(registry.tasks)} tasks")
    for col in (
        "task",
        "tags",
        "data files (role: official name)",
        "metrics (primary first)",
        "no answer",
        "export",
    ):
        table.add_column(col, overflow="fold")
    for name, cfg in sorted(registry.tasks.items()):
        files = "\n".join(
            f"{role}: {n if isinstance(n, str) else ' | '.join(n)}{' (optional)' if role in cfg.dataset.optional else ''}"
            for role, n in cfg.dataset.files.items()
        )
        metrics = [cfg.primary_metric.name] + [
            m.name for m in cfg.metrics if m.name != cfg.primary_metric.name
        ]
        judge = f"\njudge: {cfg.judge.model}" if cfg.judge else ""
        table.add_row(
            name,
            ", ".join(cfg.tag),
            Text(files),
            Text(", ".join(metrics) + judge),
            "left out" if cfg.missing == "skip" else "wrong",
            cfg.export.format if cfg.export else "",
        )
    show(table)
    groups = Table(title=f"{len(registry.groups)} groups")
    groups.add_column("group")
    groups.add_column("tasks", overflow="fold")
    for name in sorted(registry.groups):
        groups.add_row(name, ", ".join(registry.expand(name)))
    show(groups)
    return 0
