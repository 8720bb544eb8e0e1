"""``harness score``: score saved model outputs (LLaVA answer files, eval.ai files, sample
logs, MMBench sheets) offline, optionally storing them as a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import (
    add_allow_extra,
    add_allow_missing,
    add_judge_flags,
    emit_json,
    flat_scores,
    fmt,
    kv_list,
    make_judges,
    non_negative_int,
    open_store,
    overrides_per_task,
    report_incomplete,
)
from harness.console import say, show, warn
from harness.errors import HarnessError, StoreError


def register(sub: Any) -> None:
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
