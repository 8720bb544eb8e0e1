"""The ``harness`` command line: run, tasks, score, runs, leaderboard, gate, export.

Each sub-command is a thin layer over the library: parse flags, call one
function, print a table (rich) or JSON. A :class:`~harness.errors.HarnessError`
is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.errors import HarnessError

DEFAULT_DB = "harness-results.db"
console = Console()
err_console = Console(stderr=True)


def _kv_list(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise HarnessError(
                f"{flag} {item!r}: expected ROLE=PATH (e.g. {flag} questions=llava_pope_test.jsonl)"
            )
        out[key.strip()] = value.strip()
    return out


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db or os.environ.get("HARNESS_DB") or DEFAULT_DB)


def _open_store(args: argparse.Namespace, must_exist: bool = False) -> Any:
    from harness.results.store import ResultsStore

    path = _db_path(args)
    if must_exist and not path.exists():
        raise HarnessError(f"--db {path}: no such results database (set --db or HARNESS_DB)")
    return ResultsStore(path)


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


# -- judge ---------------------------------------------------------------------------
def _add_judge_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM judge (VCG, Quilt review, MMBench fallback)")
    g.add_argument(
        "--judge-model",
        help="judge model name (env HARNESS_JUDGE_MODEL; default: the task's official judge)",
    )
    g.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")
    g.add_argument("--judge-api-key", help="API key, never stored (env OPENAI_API_KEY)")
    g.add_argument(
        "--judge-retries", type=int, default=4, help="attempts per judgement (default 4)"
    )


def _make_judges(args: argparse.Namespace, tasks: list[Any], store: Any) -> dict[str, Any]:
    """One judge per judge-scored task, each on its official model unless --judge-model is given."""
    base_url = args.judge_base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = args.judge_api_key or os.environ.get("OPENAI_API_KEY")
    judged = [t for t in tasks if t.config.judge is not None]
    if not judged or (not base_url and not api_key):
        return {}
    from harness.judge_client import OpenAIJudge

    override = args.judge_model or os.environ.get("HARNESS_JUDGE_MODEL")
    judges: dict[str, Any] = {}
    by_model: dict[str, Any] = {}
    for task in judged:
        model = override or task.config.judge.model
        if model not in by_model:
            by_model[model] = OpenAIJudge(
                model=model,
                base_url=base_url,
                api_key=api_key or "none",
                store=store,
                max_attempts=args.judge_retries,
            )
        judges[task.name] = by_model[model]
    return judges


# -- tasks -----------------------------------------------------------------------------
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
                    "judge": cfg.judge.model if cfg.judge else None,
                    "export": cfg.export.format if cfg.export else None,
                }
                for name, cfg in sorted(registry.tasks.items())
            },
            "groups": {name: registry.expand(name) for name in sorted(registry.groups)},
        }
        print(json.dumps(payload, indent=2))
        return 0
    table = Table(title=f"{len(registry.tasks)} tasks")
    for col in (
        "task",
        "tags",
        "data files (role: official name)",
        "metrics (primary first)",
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
            files,
            ", ".join(metrics) + judge,
            cfg.export.format if cfg.export else "",
        )
    console.print(table)
    groups = Table(title=f"{len(registry.groups)} groups")
    groups.add_column("group")
    groups.add_column("tasks", overflow="fold")
    for name in sorted(registry.groups):
        groups.add_row(name, ", ".join(registry.expand(name)))
    console.print(groups)
    return 0


def _overrides_per_task(tasks: list[Any], overrides: dict[str, str]) -> dict[str, dict[str, str]]:
    """Apply each ``--data-file ROLE=PATH`` to every task of a group that has that role."""
    out = {t.name: {} for t in tasks}
    for role, path in overrides.items():
        owners = [t for t in tasks if role in t.config.dataset.files]
        if not owners:
            roles = sorted({r for t in tasks for r in t.config.dataset.files})
            raise HarnessError(
                f"--data-file {role}=...: no task here has the role {role!r}; roles: {roles}"
            )
        for t in owners:
            out[t.name][role] = path
    return out


# -- score -----------------------------------------------------------------------------
def _score_table(scored: Any) -> Table:
    s = scored.score
    table = Table(
        title=f"{s.task}  (n={s.n}, missing={s.n_missing}, parse failures={100 * s.parse_failure_rate:.2f}%)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, value in s.metrics.items():
        lo, hi = s.ci.get(name, (None, None))
        mark = " *" if name == s.primary else ""
        table.add_row(
            name + mark, _fmt(value), f"{_fmt(lo)} - {_fmt(hi)}" if lo is not None else "-"
        )
    for key, value in s.extra.items():
        table.add_row(key, str(value), "")
    return table


def cmd_score(args: argparse.Namespace) -> int:
    from harness.datafiles import file_sha256
    from harness.evaluator import write_sample_log
    from harness.predictions import read_predictions
    from harness.registry import default_registry
    from harness.scoring import group_metrics, score_predictions
    from harness.task import get_task

    registry = default_registry()
    names = registry.expand(args.task)
    overrides = _kv_list(args.data_file, "--data-file")
    tasks = [get_task(n) for n in names]
    per_task = _overrides_per_task(tasks, overrides)
    preds = read_predictions(args.predictions)
    store = _open_store(args) if args.db else None
    judges = _make_judges(args, tasks, store)
    results = []
    for name in names:
        scored = score_predictions(
            name,
            preds,
            args.data_root,
            per_task[name],
            judge=judges.get(name),
            n_boot=args.bootstrap,
        )
        results.append(scored)
        if args.log_samples:
            prompts = {k: v.record.get("prompt") for k, v in scored.match.records.items()}
            write_sample_log(Path(args.log_samples) / f"{name}.jsonl", scored.score, prompts)
    scores = {r.task.name: r.score for r in results}
    groups = {
        g: group_metrics(registry.groups[g], scores) for g in [args.task] if g in registry.groups
    }

    if store is not None:
        _store_offline_scores(store, args, results, groups, file_sha256(Path(args.predictions)))
    if args.json:
        flat: dict[str, float] = {}
        for r in results:
            flat.update(r.score.flat())
        for g, metrics in groups.items():
            flat.update({f"{g}/{k}": v for k, v in metrics.items()})
        print(json.dumps(flat, indent=2, sort_keys=True))
        return 0
    for r in results:
        console.print(_score_table(r))
        if r.match and r.match.n_unmatched and len(names) == 1:
            console.print(
                f"[yellow]{r.match.n_unmatched} predictions matched no document of {r.task.name}[/]"
            )
    for g, metrics in groups.items():
        console.print(f"[bold]{g}[/]: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
    for judge in {id(j): j for j in judges.values()}.values():
        err_console.print(f"judge {judge.model}: {judge.stats()}", soft_wrap=True, highlight=False)
    return 0


def _store_offline_scores(
    store: Any, args: argparse.Namespace, results: list[Any], groups: dict, pred_hash: str
) -> None:
    from harness.provenance import git_commit, host, package_version
    from harness.registry import default_registry
    from harness.requests import gen_kwargs_hash
    from harness.results.store import RunMeta

    fingerprint = f"predictions:{pred_hash[:16]}"
    run_id = store.create_run(
        RunMeta(
            model=args.model or Path(args.predictions).stem,
            model_fingerprint=fingerprint,
            source="score",
            precision=args.precision,
            package_version=package_version(),
            git_commit=git_commit(),
            host=host(),
            command=" ".join(sys.argv),
            notes=f"scored offline from {args.predictions}",
        )
    )
    try:
        for r in results:
            task_hash = r.task.task_hash(r.files)
            gen_hash = gen_kwargs_hash({"offline": True})
            store.start_task(
                run_id,
                r.task.name,
                task_version=r.task.config.version,
                task_hash=task_hash,
                gen_hash=gen_hash,
                gen_kwargs={"offline": True},
                data_files=r.files,
                data_hashes={"task_hash": task_hash},
                options=r.task.options,
            )
            rows = [
                (d, (r.match.records[d].record.get("prompt") or ""), text)
                for d, text in r.match.outputs.items()
            ]
            store.put_outputs(fingerprint, r.task.name, task_hash, gen_hash, rows)
            store.put_task_score(
                run_id, fingerprint, task_hash, gen_hash, r.score, r.task.config.metrics
            )
        registry = default_registry()
        for g, metrics in groups.items():
            primary = next(
                (m.metric for m in registry.groups[g].aggregate_metrics if m.primary), None
            )
            store.put_group_metrics(run_id, g, metrics, primary)
        store.finish_run(run_id)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    err_console.print(f"stored as run {run_id} in {store.path}", soft_wrap=True)


# -- runs ------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    import datetime as dt

    store = _open_store(args, must_exist=True)
    runs = store.runs()
    if args.json:
        print(json.dumps(runs, indent=2, default=str))
        return 0
    table = Table(title=f"runs in {store.path}")
    for col in ("run", "created", "status", "source", "model", "precision", "tasks"):
        table.add_column(col)
    for run in runs:
        tasks = ", ".join(t["task"] for t in store.run_tasks(run["run_id"]))
        created = dt.datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            run["run_id"],
            created,
            run["status"],
            run["source"],
            run["model"],
            run["precision"],
            tasks,
        )
    console.print(table)
    return 0


# -- leaderboard / gate ----------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.results.leaderboard import build_leaderboard, plot_drops, render

    store = _open_store(args, must_exist=True)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    board = build_leaderboard(store, base=args.base, tasks=tasks, metric=args.metric)
    text = render(board, args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        err_console.print(f"wrote {args.out}")
    else:
        print(text)
    if args.plot:
        plot_drops(board, Path(args.plot))
        err_console.print(f"wrote {args.plot}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from harness.results.gate import run_gate

    store = _open_store(args, must_exist=True)
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
    )
    if args.json:
        print(report.to_json())
    else:
        console.print(report.table())
        console.print(
            "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]: " + report.summary()
        )
    return 0 if report.passed else 1


# -- export ------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from harness.predictions import match_predictions, read_predictions
    from harness.results.export import export_task
    from harness.task import get_task

    task = get_task(args.task)
    overrides = _overrides_per_task([task], _kv_list(args.data_file, "--data-file"))[task.name]
    docs, files = task.load_docs(Path(args.data_root) if args.data_root else None, overrides)
    if args.predictions:
        outputs = match_predictions(task, docs, read_predictions(args.predictions)).outputs
    elif args.run:
        store = _open_store(args, must_exist=True)
        outputs = {s["doc_id"]: s["raw_output"] for s in store.run_samples(args.run, task.name)}
    else:
        raise HarnessError("export needs --run RUN (from --db) or --predictions FILE")
    rows = export_task(task, docs, outputs, Path(args.out), files)
    missing = sum(1 for d in docs if d["doc_id"] not in outputs)
    err_console.print(
        f"wrote {rows} rows to {args.out}"
        + (f" ({missing} documents had no output)" if missing else "")
    )
    return 0


# -- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vlm-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list every task and group with its data files and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tasks)

    from harness.cli_models import add_model_parsers

    add_model_parsers(sub, _add_judge_flags)

    p = sub.add_parser("score", help="score saved model outputs offline")
    p.add_argument("task", help="task, group or tag (e.g. pope, mme, gqa_testdev)")
    p.add_argument(
        "--predictions",
        required=True,
        help="LLaVA answers .jsonl, eval.ai .json, harness sample log, MMBench .xlsx",
    )
    p.add_argument("--data-root", type=Path, help="folder holding the benchmark's official files")
    p.add_argument(
        "--data-file", action="append", metavar="ROLE=PATH", help="override one data file"
    )
    p.add_argument(
        "--json", action="store_true", help="print one flat JSON object metric -> number"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0: none)"
    )
    p.add_argument("--db", help="also store the scores in this results DB (env HARNESS_DB)")
    p.add_argument("--model", help="model name recorded with --db (default: predictions file stem)")
    p.add_argument(
        "--precision",
        default="fp16",
        help="precision label recorded with --db (fp16, awq-w4g128, ...)",
    )
    p.add_argument("--log-samples", type=Path, help="write per-sample JSON lines into this folder")
    _add_judge_flags(p)
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("runs", help="list runs in the results DB")
    p.add_argument("--db")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("leaderboard", help="model x precision table with drops vs a base")
    p.add_argument("--db")
    p.add_argument(
        "--base", default="fp16", help="precision label (or run id) that drops are measured against"
    )
    p.add_argument("--tasks", help="comma list of tasks/groups (default: all in the DB)")
    p.add_argument("--metric", help="metric to show (default: each task's primary)")
    p.add_argument("--format", choices=["markdown", "csv", "html"], default="markdown")
    p.add_argument("--out", help="write the table here instead of stdout")
    p.add_argument("--plot", help="write a PNG bar chart of the drops")
    p.set_defaults(fn=cmd_leaderboard)

    p = sub.add_parser("gate", help="exit 1 when the candidate run loses too much accuracy")
    p.add_argument("--db")
    p.add_argument("--base", required=True, help="run id, id prefix, or MODEL@PRECISION")
    p.add_argument("--candidate", required=True, help="run id, id prefix, or MODEL@PRECISION")
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="largest allowed drop of the primary metric (points)",
    )
    p.add_argument(
        "--relative", action="store_true", help="--max-drop is a percentage of the base value"
    )
    p.add_argument("--tasks", help="comma list of tasks (default: those both runs have)")
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the paired test"
    )
    p.add_argument(
        "--require-significance",
        action="store_true",
        help="fail only when the drop is also significant",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--metric", help="metric to compare (default: each task's primary)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_gate)

    p = sub.add_parser("export", help="write an eval-server submission file")
    p.add_argument("task")
    p.add_argument("--out", required=True)
    p.add_argument("--run", help="run id (or MODEL@PRECISION) in --db to export")
    p.add_argument("--db")
    p.add_argument("--predictions", help="export from a predictions file instead of a run")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--data-file", action="append", metavar="ROLE=PATH")
    p.set_defaults(fn=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except HarnessError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; finished samples are kept in the results DB")
        return 130


if __name__ == "__main__":
    sys.exit(main())
