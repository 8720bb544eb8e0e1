"""The commands that touch models: ``run``, ``models``, ``train``, ``toy-data``.

``run`` loads a model adapter, evaluates it on tasks, stores and prints the
results. Kept apart from :mod:`harness.cli` because these commands import
torch; their flags are added to the main parser by :func:`add_model_parsers`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.errors import HarnessError

log = logging.getLogger("harness.cli")

PLAIN_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
DTYPE_LABELS = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _gen_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--gen KEY=VALUE`` flags, checked against the generation settings adapters know."""
    from harness.api.requests import check_gen_kwargs

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--gen {item!r}: expected KEY=VALUE (e.g. --gen max_new_tokens=16)")
        out[key.strip()] = _json_value(value.strip())
    try:
        return check_gen_kwargs(out, "--gen")
    except ValueError as exc:
        raise HarnessError(str(exc)) from None


def _load_dtype(quant: str | None, dtype: str | None) -> str:
    """The dtype to load the model in: --quant fp16/bf16/fp32 fixes it, recipes use --dtype."""
    if quant in PLAIN_PRECISIONS:
        if dtype not in (None, "auto") and dtype != quant:
            raise HarnessError(f"--quant {quant} conflicts with --dtype {dtype}")
        return quant
    return dtype or "auto"


def _normal_quant(quant: str | None) -> str | None:
    """``--quant`` spelled canonically: ``FP16`` is fp16, ``AWQ-W4G128`` is awq-w4g128."""
    if quant is None:
        return None
    text = quant.strip().lower()
    if text in PLAIN_PRECISIONS:
        return text
    from harness.quantizers.runtime import parse_quant

    return parse_quant(quant).name


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _results_table(result: Any, model: Any, precision: str) -> Table:
    from harness.cli_common import fmt

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


def _calib_tasks(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in (args.calib_tasks or "").split(",") if t.strip()]


def _quant_options(
    args: argparse.Namespace,
    calib_tasks: list[str],
    data_files: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``compute_quantization`` from the calibration and cache flags."""
    return {
        "calib_tasks": calib_tasks,
        "data_root": args.data_root,
        "data_files": data_files,
        "cache_dir": args.quant_cache or os.environ.get("HARNESS_QUANT_CACHE"),
        "dump": args.quant_dump,
        "load": args.quant_load,
        "log": log.info,
    }


def precision_label(quant: str, calib_tasks: list[str]) -> str:
    """The run's precision: ``--quant``, plus the calibration tasks when given (they are
    not part of the recipe name but change the result)."""
    return f"{quant}({'+'.join(calib_tasks)})" if calib_tasks else quant


def _run_data_files(args: argparse.Namespace, names: list[str], calib: list[str]) -> dict:
    from harness.cli_common import kv_list

    data_files: dict[str, dict[str, str]] = {}
    for item in args.data_file or []:
        task, sep, rest = item.partition(":")
        if not sep or task not in [*names, *calib]:
            raise HarnessError(
                f"--data-file {item!r}: expected TASK:ROLE=PATH with TASK one of {[*names, *calib]}"
            )
        data_files.setdefault(task, {}).update(kv_list([rest], "--data-file"))
    return data_files


def cmd_run(args: argparse.Namespace) -> int:
    from harness.cli import flat_scores
    from harness.cli_common import (
        db_path,
        emit_json,
        make_judges,
        open_store,
        report_incomplete,
    )
    from harness.console import show
    from harness.evaluator import EvalConfig, evaluate, prepare
    from harness.models.registry import get_entry
    from harness.registry import default_registry
    from harness.task import get_task

    log.info(f"harness run: {args.model} on {args.tasks}; reading the tasks' data ...")
    registry = default_registry()
    names = registry.expand(args.tasks)
    tasks = [get_task(n) for n in names]
    calib_tasks = _calib_tasks(args)
    data_files = _run_data_files(args, names, calib_tasks)
    quant = _normal_quant(args.quant)
    recipe = None
    if quant and quant not in PLAIN_PRECISIONS:
        from harness.quantizers.runtime import resolve_recipe

        # fail on a bad recipe or calibration task before loading anything
        recipe = resolve_recipe(quant, calib_tasks)
    elif calib_tasks:
        raise HarnessError("--calib-tasks needs --quant with a calibrated recipe (awq, gptq, ...)")
    dtype = _load_dtype(quant, args.dtype)
    options: dict[str, Any] = {}
    if args.num_frames is not None:
        options["num_frames"] = args.num_frames
    config = EvalConfig(
        data_root=args.data_root,
        data_files=data_files,
        batch_size=args.batch_size,
        limit=args.limit,
        gen_overrides=_gen_overrides(args.gen),
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
    _set_threads(args.threads)
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
        qmodel = quantize_adapter(model, quant, **_quant_options(args, calib_tasks, data_files))
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


def load_model_logged(args: argparse.Namespace, dtype: str, options: dict[str, Any]) -> Any:
    """load_model, saying first what is loaded from where (importing torch and reading a 7B
    checkpoint take a while)."""
    from harness.models.hf_adapter import resolve_device, resolve_dtype
    from harness.models.loading import load_model

    resolve_dtype(dtype, resolve_device(args.device))  # a bad --device / --dtype fails first
    log.info(
        f"loading {args.model}"
        + (f" from {args.model_path}" if args.model_path else "")
        + f" (device {args.device}, dtype {dtype}) ..."
    )
    return load_model(
        args.model,
        model_path=args.model_path,
        adapter=args.adapter,
        device=args.device,
        dtype=dtype,
        options=options,
    )


def cmd_models(args: argparse.Namespace) -> int:
    from harness.cli_common import emit_json
    from harness.console import show
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


def cmd_train(args: argparse.Namespace) -> int:
    from harness.cli_common import emit_json
    from harness.console import say
    from harness.trainers.recipes import RECIPES

    try:
        recipe = RECIPES[args.recipe]
    except KeyError:
        raise HarnessError(
            f"harness train {args.recipe}: unknown recipe; known: {', '.join(sorted(RECIPES))}"
        ) from None

    from harness.models.loading import WEIGHTS_DIR
    from harness.trainers import portable
    from harness.trainers.reproduction import ShippedModel, describe

    if args.portable and not portable.portable_active():
        argv = ["train", args.recipe, "--out", str(args.out), "--seed", str(args.seed)]
        argv += ["--portable"] + ["--restart"] * args.restart + ["--keep-stages"] * args.keep_stages
        say(f"--portable: running again under {portable.isa_pins(portable.PORTABLE_ENV)}")
        portable.reexec_portable(argv)

    # read before training: the run may write over the shipped folder
    shipped = ShippedModel.read(WEIGHTS_DIR / args.recipe)
    stats = recipe(
        Path(args.out),
        seed=args.seed,
        log=say,
        resume=not args.restart,
        keep_stages=args.keep_stages,
    )
    if shipped is not None:
        stats["shipped_comparison"] = report = shipped.compare(Path(args.out))
        say(describe(report, args.recipe))
    emit_json(stats, default=str)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from harness.quantizers.checkpoint import write_checkpoint
    from harness.quantizers.formats.base import CheckpointError
    from harness.quantizers.runtime import compute_quantization, resolve_recipe

    calib_tasks = _calib_tasks(args)
    quant = _normal_quant(args.quant)
    resolve_recipe(quant, calib_tasks)  # fail on a bad recipe before loading anything
    if args.format not in {"awq", "gptq", "compressed-tensors"}:
        raise HarnessError(f"--format {args.format}: expected awq, gptq or compressed-tensors")
    out_dir = Path(args.out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not args.overwrite:
        raise HarnessError(
            f"--out {args.out}: exists and is not an empty folder; pass --overwrite to replace it"
        )
    _set_threads(args.threads)
    model = load_model_logged(args, args.dtype, {})
    start = time.perf_counter()
    qmodel = compute_quantization(model, quant, **_quant_options(args, calib_tasks))
    try:
        out = write_checkpoint(
            model.model,
            qmodel,
            model.processor,
            out_dir,
            args.format,
            overwrite=args.overwrite,
        )
    except (CheckpointError, FileExistsError) as exc:
        raise HarnessError(f"--out {args.out} --format {args.format}: {exc}") from exc
    log.info(
        f"wrote {len(qmodel.weights)} quantized Linear layers ({quant}, {args.format}) "
        f"to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def cmd_toy_data(args: argparse.Namespace) -> int:
    from harness.console import say
    from harness.tasks.toy.data import generate_world

    start = time.perf_counter()
    out = generate_world(Path(args.out))
    say(f"wrote the synthetic world to {out} in {time.perf_counter() - start:.1f}s")
    return 0


def _add_threads(p: argparse.ArgumentParser) -> None:
    from harness.cli_common import positive_int

    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for torch (default: torch's own choice); recorded with the run, "
        "since CPU sums can round differently with another thread count",
    )


def add_model_parsers(sub: Any) -> None:
    from harness.cli_common import (
        add_allow_missing,
        add_judge_flags,
        non_negative_int,
        positive_int,
    )

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("train", help="re-create a project-trained model (e.g. toy-llava)")
    p.add_argument("recipe", help="recipe name (toy-llava)")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--restart",
        action="store_true",
        help="ignore the stage checkpoints in OUT/stages (by default a rerun resumes after "
        "the last stage whose checkpoint matches the recipe and seed)",
    )
    p.add_argument(
        "--keep-stages",
        action="store_true",
        help="keep OUT/stages/ (each stage's weights) after the model is saved",
    )
    p.add_argument(
        "--portable",
        action="store_true",
        help="pin MKL, oneDNN and torch to their AVX2 code paths, so that the weights are the "
        "same on any AVX2 CPU (slower; not how the shipped weights were made)",
    )
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("quantize", help="quantize a model and write a checkpoint other tools load")
    p.add_argument("--model", required=True)
    p.add_argument("--quant", required=True, help="recipe, e.g. awq-w4g128, gptq-w4g128-sym")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--format", default="awq", help="awq, gptq or compressed-tensors")
    p.add_argument("--model-path", type=Path)
    p.add_argument("--adapter")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quant-cache", type=Path, help="reuse searched scales/codes from here")
    _add_calibration_flags(p)
    p.add_argument("--data-root", type=Path, help="folder holding --calib-tasks' files")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    _add_threads(p)
    p.set_defaults(fn=cmd_quantize)

    p = sub.add_parser("toy-data", help="write the synthetic world's mini benchmarks to a folder")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_toy_data)

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
    _add_calibration_flags(p)
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
    p.add_argument(
        "--gen",
        action="append",
        metavar="KEY=VALUE",
        help="override a generation setting (max_new_tokens, min_new_tokens, temperature, "
        "top_p, num_beams, do_sample)",
    )
    p.add_argument(
        "--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (0: no CI)"
    )
    p.add_argument("--db", help="results DB (env HARNESS_DB; default harness-results.db)")
    p.add_argument("--no-db", action="store_true", help="do not store anything")
    p.add_argument("--log-samples", type=Path, help="write per-sample JSON lines into this folder")
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    _add_threads(p)
    add_allow_missing(p)
    add_judge_flags(p)
    p.set_defaults(fn=cmd_run)


def _add_calibration_flags(p: argparse.ArgumentParser) -> None:
    """Where a quant recipe's search comes from: calibration tasks, or a dump of a past search."""
    p.add_argument(
        "--quant-dump",
        type=Path,
        metavar="DIR",
        help="write the searched scales/codes to DIR (like llm-awq's --dump_awq)",
    )
    p.add_argument(
        "--quant-load",
        type=Path,
        metavar="DIR",
        help="use a --quant-dump result instead of searching (checked against recipe and weights)",
    )
    p.add_argument(
        "--calib-tasks",
        metavar="TASK[,TASK]",
        help="calibrate on these tasks' images + prompts (implies image_text calibration; "
        "use documents you do not report)",
    )
