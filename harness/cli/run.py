"""``harness run``: load a model adapter (quantized when asked), evaluate it on tasks, store
and print the results."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.cli.common import (
    add_allow_missing,
    add_gen_flag,
    add_judge_flags,
    db_path,
    emit_json,
    flat_scores,
    fmt,
    gen_overrides,
    make_judges,
    non_negative_int,
    open_store,
    parse_data_files,
    positive_int,
    report_incomplete,
)
from harness.cli.model_flags import (
    DTYPE_LABELS,
    PLAIN_PRECISIONS,
    add_calibration_flags,
    add_threads,
    calib_task_names,
    load_dtype,
    load_model_logged,
    normal_quant,
    precision_label,
    quant_options,
    set_threads,
)
from harness.console import show
from harness.errors import HarnessError

log = logging.getLogger("harness.cli")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="evaluate a model on tasks and store the results")
    p.add_argument("--model", required=True, help="registry name (see `harness models`)")
    p.add_argument("--tasks", required=True, help="comma list of tasks, groups or tags")
    p.add_argument("--model-path", type=Path, help="local weights folder for --model's adapter")
    p.add_argument("--adapter", help="override the registry's adapter (llava, vila, qwen_vl, ...)")
    p.add_argument(
        "--quant",
        help="fp16 / bf16 / fp32, or a quant recipe (rtn-w4g128, awq-w4g128, gptq-w4g128, "
        "autoround-w4g128, awq-w3g128 ...); recorded as the run's precision",
    )
    p.add_argument(
        "--quant-cache",
        type=Path,
        help="save searched scales/codes here and reuse them (env HARNESS_QUANT_CACHE)",
    )
    add_calibration_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp16, bf16, fp32"
    )
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument(
        "--limit",
        type=positive_int,
        help="first N documents of each task (a smoke run: marked in the DB, never chosen by "
        "MODEL@PRECISION)",
    )
    p.add_argument(
        "--num-frames", type=positive_int, help="frames sampled per video (default per model)"
    )
    p.add_argument("--data-root", type=Path, help="folder holding the benchmarks' official files")
    p.add_argument(
        "--data-file", action="append", metavar="TASK:ROLE=PATH", help="override one data file"
    )
    add_gen_flag(p)
    p.add_argument(
        "--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (0: no CI)"
    )
    p.add_argument("--db", help="results DB (env HARNESS_DB; default harness-results.db)")
    p.add_argument("--no-db", action="store_true", help="do not store anything")
    p.add_argument("--log-samples", type=Path, help="write per-sample JSON lines into this folder")
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    add_threads(p)
    add_allow_missing(p)
    add_judge_flags(p)
    p.set_defaults(fn=cmd_run)


def _results_table(result: Any, model: Any, precision: str) -> Table:

    table = Table(title=f"{model.name} @ {precision}")
    for col, justify in (
        ("task", "left"),
        ("metric", "left"),
        ("value", "right"),
        ("95% CI", "right"),
        ("n", "right"),
        ("no answer", "right"),
        ("generated", "right"),
        ("reused", "right"),
        ("samples/s", "right"),
    ):
        table.add_column(col, justify=justify)
    for name, score in result.scores.items():
        lo, hi = score.ci.get(score.primary, (None, None))
        value = score.metrics.get(score.primary)
        seconds = result.seconds.get(name, 0.0)
        generated = result.generated.get(name, 0)
        rate = f"{generated / seconds:.1f}" if generated and seconds > 0 else "-"
        table.add_row(
            name,
            score.primary,
            fmt(value),
            f"{fmt(lo)} - {fmt(hi)}" if lo is not None else "-",
            str(score.n),
            str(score.n_missing),
            str(generated),
            str(result.reused.get(name, 0)),
            rate,
        )
        judged = score.extra.get("judge_needed")
        if judged and not score.extra.get("judge_failures") and "judge" not in score.extra:
            table.add_row("", Text(f"needs a judge ({judged} samples)", style="yellow"), *[""] * 7)
    for group, metrics in result.groups.items():
        for metric, value in metrics.items():
            table.add_row(Text(group, style="bold"), metric, fmt(value), *[""] * 6)
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from harness.evaluator import EvalConfig, evaluate, prepare
    from harness.models.registry import get_entry
    from harness.registry import default_registry
    from harness.task import get_task

    log.info(f"harness run: {args.model} on {args.tasks}; reading the tasks' data ...")
    registry = default_registry()
    names = registry.expand(args.tasks)
    tasks = [get_task(n) for n in names]
    calib_tasks = calib_task_names(args)
    data_files = parse_data_files(args.data_file, [*names, *calib_tasks])
    quant = normal_quant(args.quant)
    recipe = None
    if quant and quant not in PLAIN_PRECISIONS:
        from harness.quantizers.runtime import resolve_recipe

        # fail on a bad recipe or calibration task before loading anything
        recipe = resolve_recipe(quant, calib_tasks)
    elif calib_tasks:
        raise HarnessError("--calib-tasks needs --quant with a calibrated recipe (awq, gptq, ...)")
    dtype = load_dtype(quant, args.dtype)
    options: dict[str, Any] = {}
    if args.num_frames is not None:
        options["num_frames"] = args.num_frames
    config = EvalConfig(
        data_root=args.data_root,
        data_files=data_files,
        batch_size=args.batch_size,
        limit=args.limit,
        gen_overrides=gen_overrides(args.gen),
        n_boot=args.bootstrap,
        model_path=str(args.model_path or ""),
        command=" ".join(["harness", *sys.argv[1:]]),
        log_samples=args.log_samples,
        num_frames=args.num_frames,
    )
    entry = get_entry(args.model)
    # Data, flags and the results DB are checked before the model loads (which can take minutes).
    prepared = prepare(args.tasks, config, entry.family)
    if not args.no_db and db_path(args).exists():
        open_store(args, write=True).close()  # a damaged or read-only DB fails now
    set_threads(args.threads)
    start = time.perf_counter()
    model = load_model_logged(args, dtype, options)
    log.info(
        f"loaded {model.name} ({model.family}) on {model.device} in {time.perf_counter() - start:.1f}s"
    )
    quant_recipe, quant_hash = None, ""
    if recipe is not None:
        from harness.quantizers.runtime import quantize_adapter

        start = time.perf_counter()
        log.info(f"quantizing {model.name} with {quant} ...")
        qmodel = quantize_adapter(model, quant, **quant_options(args, calib_tasks, data_files))
        quant_recipe, quant_hash = qmodel.recipe, model.info["quant"]["hash"]
        log.info(
            f"quantized {len(qmodel.weights)} Linear layers with {quant} "
            f"(cache {qmodel.stats.get('cache', 'off')}, {time.perf_counter() - start:.1f}s; "
            f"{qmodel.stats['install']})"
        )
    precision = precision_label(quant, calib_tasks) if quant else None
    precision = precision or DTYPE_LABELS.get(str(model.model.dtype).removeprefix("torch."), "fp32")
    config.precision, config.quant_recipe, config.quant_hash = precision, quant_recipe, quant_hash
    store = None if args.no_db else open_store(args, write=True)  # created once the model loaded
    judges = make_judges(args, tasks, store)
    result = evaluate(args.tasks, model, store, config, judges, prepared=prepared)
    if args.json:
        emit_json(flat_scores(result.scores.values(), result.groups), sort_keys=True)
    else:
        show(_results_table(result, model, precision))
    status = report_incomplete(result.scores, args.allow_missing, result.failures)
    if result.store_error is not None:
        raise HarnessError(
            f"{result.store_error} (the scores above were computed but not all were stored)"
        )
    if store is not None:
        log.info(f"stored as run {result.run_id} in {store.path}")
    return status
