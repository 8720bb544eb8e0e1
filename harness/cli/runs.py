"""``harness runs``: the runs in a results DB, with their settings and tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import emit_json, open_store
from harness.console import show


def register(sub: Any) -> None:
    p = sub.add_parser("runs", help="list runs in the results DB")
    p.add_argument("--db")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)


def _settings_text(settings: dict[str, Any]) -> str:
    """The parts of a run's settings that most often differ: dtype, device, attention, threads."""
    runtime = settings.get("runtime", {})
    parts = [runtime.get("dtype"), runtime.get("device")]
    attention = runtime.get("attention") or {}
    if attention:
        parts.append("attn " + "/".join(sorted(set(attention.values()))))
    if runtime.get("cpu_threads"):
        parts.append(f"{runtime['cpu_threads']} threads")
    if settings.get("quant"):
        parts.append(f"quant {settings['quant'].get('recipe')}")
    if runtime.get("quant_kernels"):
        parts.append("+".join(sorted(runtime["quant_kernels"])))
    if settings.get("template"):
        parts.append(f"template {settings['template']}")
    if settings.get("predictions"):
        parts.append(f"from {Path(settings['predictions']).name}")
    return ", ".join(p for p in parts if p)


def cmd_runs(args: argparse.Namespace) -> int:
    store = open_store(args, must_exist=True)
    runs = store.runs()
    for run in runs:
        for key in ("settings", "process", "quant_recipe", "timings"):
            if isinstance(run.get(key), str):
                run[key] = json.loads(run[key]) if run[key] else None
        run["tasks"] = {
            t["task"]: {"n": t["n"], "n_missing": t["n_missing"], "finished": t["finished_at"]}
            for t in store.run_tasks(run["run_id"])
        }
    if args.json:
        emit_json(runs, default=str)
        return 0
    table = Table(title=f"runs in {store.path}")
    for col in ("run", "created", "status", "model", "precision", "settings", "tasks (n)"):
        table.add_column(col)
    for run in runs:
        created = dt.datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M")
        status = run["status"] + (f", --limit {run['limit_docs']}" if run["limit_docs"] else "")
        tasks = "\n".join(
            f"{name} ({t['n']}" + (f", {t['n_missing']} no answer" if t["n_missing"] else "") + ")"
            for name, t in run["tasks"].items()
        )
        table.add_row(
            run["run_id"],
            created,
            status,
            run["model"],
            run["precision"],
            Text(_settings_text(run["settings"] or {})),
            Text(tasks),
        )
    show(table)
    return 0
