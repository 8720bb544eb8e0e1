"""The ``harness`` command line: run, tasks, score, runs, leaderboard, gate, export.

Each sub-command is a thin layer over the library: parse flags, call one
function, print a table (rich) or JSON on stdout; progress, notes and errors
go to stderr (:mod:`harness.console`). A :class:`~harness.errors.HarnessError`
is printed as one line and exits with status 2; scores that are incomplete
exit with 3 (see :mod:`harness.cli_common`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from harness import __version__
from harness.cli_common import (
    Parser,
    add_allow_extra,
    add_allow_missing,
    add_judge_flags,
    emit_json,
    finite_float,
    fmt,
    kv_list,
    make_judges,
    non_negative_int,
    open_store,
    overrides_per_task,
    probability,
    report_incomplete,
    setup_logging,
)
from harness.console import error, say, show, warn
from harness.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_USAGE, HarnessError, StoreError


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


# -- score -----------------------------------------------------------------------------
def _score_table(scored: Any) -> Table:
    s = scored.score
    table = Table(
        title=f"{s.task}  (n={s.n}, no answer={s.n_missing}, "
        f"parse failures={100 * s.parse_failure_rate:.2f}%)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, value in s.metrics.items():
        lo, hi = s.ci.get(name, (None, None))
        mark = " *" if name == s.primary else ""
        table.add_row(name + mark, fmt(value), f"{fmt(lo)} - {fmt(hi)}" if lo is not None else "-")
    for key, value in s.extra.items():
        table.add_row(key, str(value), "")
    return table


def flat_scores(scores: Any, groups: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ``--json`` object: ``task/metric -> number`` for every task and group."""
    flat: dict[str, Any] = {}
    for score in scores:
        flat.update(score.flat())
    for g, metrics in groups.items():
        flat.update({f"{g}/{k}": v for k, v in metrics.items()})
    return flat


def cmd_score(args: argparse.Namespace) -> int:
    from harness.datafiles import file_sha256
    from harness.evaluator import write_sample_log
    from harness.registry import default_registry
    from harness.scoring import group_metrics, score_tasks
    from harness.task import get_task

    registry = default_registry()
    names = registry.expand(args.task)
    if not names:
        raise HarnessError(f"harness score {args.task!r}: no task named (e.g. pope, mme)")
    tasks = [get_task(n) for n in names]
    per_task = overrides_per_task(tasks, kv_list(args.data_file, "--data-file"))
    store = open_store(args, write=True) if args.db else None
    judges = make_judges(args, tasks, store)
    results = score_tasks(
        names,
        args.predictions,
        args.data_root,
        per_task,
        judges=judges,
        n_boot=args.bootstrap,
        allow_extra=args.allow_extra,
    )
    for r in results:
        if args.log_samples:
            prompts = {k: v.record.get("prompt") for k, v in r.match.records.items()}
            write_sample_log(Path(args.log_samples) / f"{r.task.name}.jsonl", r.score, prompts)
    scores = {r.task.name: r.score for r in results}
    groups = {
        g: group_metrics(registry.groups[g], scores) for g in [args.task] if g in registry.groups
    }
    stored, store_error = None, None
    if store is not None:
        try:
            stored = _store_offline_scores(
                store, args, results, groups, file_sha256(Path(args.predictions))
            )
        except StoreError as exc:  # print the scores first, then fail
            store_error = exc
    if args.json:
        emit_json(flat_scores(scores.values(), groups), sort_keys=True)
    else:
        for r in results:
            show(_score_table(r))
        for g, metrics in groups.items():
            show(Text(f"{g}: " + ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items())))
    if any(r.match.n_unmatched for r in results):
        warn(f"{results[0].match.n_unmatched} predictions matched no document (--allow-extra)")
    for judge in {id(j): j for j in judges.values()}.values():
        say(f"judge {judge.model}: {judge.stats()}")
    status = report_incomplete(scores, args.allow_missing)
    if store_error is not None:
        raise store_error
    if stored is not None:
        say(f"stored as run {stored} in {store.path}")
    return status


def _store_offline_scores(
    store: Any, args: argparse.Namespace, results: list[Any], groups: dict, pred_hash: str
) -> str:
    from harness.api.requests import gen_kwargs_hash
    from harness.provenance import git_commit, host, package_version
    from harness.registry import default_registry
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
            command=" ".join(["harness", *sys.argv[1:]]),
            notes=f"scored offline from {args.predictions}",
            settings={"predictions": str(args.predictions), "sha256": pred_hash},
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
            # every document gets a row, answered or not, so the run says what it lacked
            rows = []
            for doc in r.docs:
                d = doc["doc_id"]
                record = r.match.records.get(d)
                prompt = (record.record.get("prompt") if record else None) or ""
                rows.append((d, prompt, r.match.outputs.get(d)))
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
        try:
            store.finish_run(run_id, "failed")
        except StoreError:
            pass
        raise
    return run_id


# -- runs ------------------------------------------------------------------------------
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


# -- leaderboard / gate ----------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.console import emit
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


def cmd_gate(args: argparse.Namespace) -> int:
    from harness.console import emit
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


# -- export ------------------------------------------------------------------------------
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


# -- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vlm-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list every task and group with its data files and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tasks)

    from harness.cli_models import add_model_parsers

    add_model_parsers(sub)

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
        "--bootstrap",
        type=non_negative_int,
        default=1000,
        help="bootstrap resamples for the 95%% CI (0: none)",
    )
    p.add_argument("--db", help="also store the scores in this results DB (env HARNESS_DB)")
    p.add_argument("--model", help="model name recorded with --db (default: predictions file stem)")
    p.add_argument(
        "--precision",
        default="fp16",
        help="precision label recorded with --db (fp16, awq-w4g128, ...)",
    )
    p.add_argument("--log-samples", type=Path, help="write per-sample JSON lines into this folder")
    add_allow_missing(p)
    add_allow_extra(p)
    add_judge_flags(p)
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("runs", help="list runs in the results DB")
    p.add_argument("--db")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return int(args.fn(args) or 0)
    except HarnessError as exc:
        error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted; finished samples are kept in the results DB")
        return 130


if __name__ == "__main__":
    sys.exit(main())
