"""The commands that touch models: ``run``, ``models``, ``train``, ``toy-data``.

``run`` loads a model adapter, evaluates it on tasks, stores and prints the
results. Kept apart from :mod:`harness.cli` because these commands import
torch; their flags are added to the main parser by :func:`add_model_parsers`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from harness.errors import HarnessError

PLAIN_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
DTYPE_LABELS = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _gen_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"--gen {item!r}: expected KEY=VALUE (e.g. --gen max_new_tokens=16)")
        out[key.strip()] = _json_value(value.strip())
    return out


def _load_dtype(quant: str | None, dtype: str | None) -> str:
    """The dtype to load the model in: --quant fp16/bf16/fp32 fixes it, recipes use --dtype."""
    if quant in PLAIN_PRECISIONS:
        if dtype not in (None, "auto") and dtype != quant:
            raise HarnessError(f"--quant {quant} conflicts with --dtype {dtype}")
        return quant
    return dtype or "auto"


def _results_table(result: Any, model: Any, precision: str) -> Table:
    table = Table(title=f"{model.name} @ {precision}")
    for col, justify in (
        ("task", "left"),
        ("metric", "left"),
        ("value", "right"),
        ("95% CI", "right"),
        ("n", "right"),
        ("generated", "right"),
        ("reused", "right"),
        ("samples/s", "right"),
    ):
        table.add_column(col, justify=justify)
    from harness.cli import _fmt

    for name, score in result.scores.items():
        lo, hi = score.ci.get(score.primary, (None, None))
        value = score.metrics.get(score.primary)
        seconds = result.seconds.get(name, 0.0)
        generated = result.generated.get(name, 0)
        rate = f"{generated / seconds:.1f}" if generated and seconds > 0 else "-"
        table.add_row(
            name,
            score.primary,
            _fmt(value),
            f"{_fmt(lo)} - {_fmt(hi)}" if lo is not None else "-",
            str(score.n),
            str(generated),
            str(result.reused.get(name, 0)),
            rate,
        )
        judged = score.extra.get("judge_needed")
        if judged:
            table.add_row(
                "", f"[yellow]needs a judge ({judged} samples)[/]", "", "", "", "", "", ""
            )
    for group, metrics in result.groups.items():
        for metric, value in metrics.items():
            table.add_row(f"[bold]{group}[/]", metric, _fmt(value), "", "", "", "", "")
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
    }


def precision_label(quant: str, calib_tasks: list[str]) -> str:
    """The run's precision: ``--quant``, plus the calibration tasks when given (they are
    not part of the recipe name but change the result)."""
    return f"{quant}({'+'.join(calib_tasks)})" if calib_tasks else quant


def cmd_run(args: argparse.Namespace) -> int:
    from harness.cli import _kv_list, _make_judges, _open_store, console, err_console
    from harness.evaluator import EvalConfig, evaluate
    from harness.models.loading import load_model
    from harness.registry import default_registry
    from harness.task import get_task

    registry = default_registry()
    names = registry.expand(args.tasks)
    tasks = [get_task(n) for n in names]
    calib_tasks = _calib_tasks(args)
    data_files: dict[str, dict[str, str]] = {}
    for item in args.data_file or []:
        task, sep, rest = item.partition(":")
        if not sep or task not in [*names, *calib_tasks]:
            raise HarnessError(
                f"--data-file {item!r}: expected TASK:ROLE=PATH with TASK one of "
                f"{[*names, *calib_tasks]}"
            )
        data_files.setdefault(task, {}).update(_kv_list([rest], "--data-file"))
    recipe = None
    if args.quant and args.quant not in PLAIN_PRECISIONS:
        from harness.quantizers.runtime import resolve_recipe

        # fail on a bad recipe or calibration task before loading anything
        recipe = resolve_recipe(args.quant, calib_tasks)
    elif calib_tasks:
        raise HarnessError("--calib-tasks needs --quant with a calibrated recipe (awq, gptq, ...)")
    dtype = _load_dtype(args.quant, args.dtype)
    options: dict[str, Any] = {}
    if args.num_frames is not None:
        options["num_frames"] = args.num_frames
    start = time.perf_counter()
    model = load_model(
        args.model,
        model_path=args.model_path,
        adapter=args.adapter,
        device=args.device,
        dtype=dtype,
        options=options,
    )
    load_seconds = time.perf_counter() - start
    err_console.print(
        f"loaded {model.name} ({model.family}) on {model.device} in {load_seconds:.1f}s",
        highlight=False,
    )
    quant_recipe, quant_hash = None, ""
    if recipe is not None:
        from harness.quantizers.runtime import quantize_adapter

        start = time.perf_counter()
        qmodel = quantize_adapter(
            model, args.quant, **_quant_options(args, calib_tasks, data_files)
        )
        quant_recipe, quant_hash = qmodel.recipe, model.info["quant"]["hash"]
        err_console.print(
            f"quantized {len(qmodel.weights)} Linear layers with {args.quant} "
            f"(cache {qmodel.stats.get('cache', 'off')}, {time.perf_counter() - start:.1f}s; "
            f"{qmodel.stats['install']})",
            highlight=False,
        )
    precision = precision_label(args.quant, calib_tasks) if args.quant else None
    precision = precision or DTYPE_LABELS.get(str(model.model.dtype).removeprefix("torch."), "fp32")
    store = None if args.no_db else _open_store(args)
    judges = _make_judges(args, tasks, store)
    config = EvalConfig(
        data_root=args.data_root,
        data_files=data_files,
        batch_size=args.batch_size,
        limit=args.limit,
        gen_overrides=_gen_overrides(args.gen),
        n_boot=args.bootstrap,
        precision=precision,
        quant_recipe=quant_recipe,
        quant_hash=quant_hash,
        model_path=str(args.model_path or ""),
        command=" ".join(["harness", *sys.argv[1:]]),
        log_samples=args.log_samples,
    )
    result = evaluate(args.tasks, model, store, config, judges)
    errors = getattr(model, "visual_errors", {})
    if args.json:
        flat: dict[str, Any] = {}
        for score in result.scores.values():
            flat.update(score.flat())
        for group, metrics in result.groups.items():
            flat.update({f"{group}/{k}": v for k, v in metrics.items()})
        print(json.dumps(flat, indent=2, sort_keys=True))
    else:
        console.print(_results_table(result, model, precision))
    if errors:
        shown = "\n  ".join(f"{k}: {v}" for k, v in list(errors.items())[:5])
        err_console.print(
            f"[yellow]{len(errors)} samples had unreadable visuals (scored as empty answers):[/]"
            f"\n  {shown}",
            highlight=False,
        )
    if store is not None:
        err_console.print(f"stored as run {result.run_id} in {store.path}", highlight=False)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from harness.cli import console
    from harness.models.registry import ENTRIES

    if args.json:
        print(json.dumps([e.__dict__ for e in ENTRIES], indent=2, default=str))
        return 0
    table = Table(title=f"{len(ENTRIES)} models")
    for col in ("model", "adapter", "family", "template", "weights", "description"):
        table.add_column(col, overflow="fold")
    for e in ENTRIES:
        table.add_row(
            e.name, e.adapter, e.family, e.template or "(processor)", e.source, e.description
        )
    console.print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from harness.cli import err_console
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

    def log(message: str) -> None:
        err_console.print(message, markup=False, highlight=False)

    if args.portable and not portable.portable_active():
        argv = ["train", args.recipe, "--out", str(args.out), "--seed", str(args.seed)]
        argv += ["--portable"] + ["--restart"] * args.restart + ["--keep-stages"] * args.keep_stages
        log(f"--portable: running again under {portable.isa_pins(portable.PORTABLE_ENV)}")
        portable.reexec_portable(argv)

    # read before training: the run may write over the shipped folder
    shipped = ShippedModel.read(WEIGHTS_DIR / args.recipe)
    stats = recipe(
        Path(args.out),
        seed=args.seed,
        log=log,
        resume=not args.restart,
        keep_stages=args.keep_stages,
    )
    if shipped is not None:
        stats["shipped_comparison"] = report = shipped.compare(Path(args.out))
        log(describe(report, args.recipe))
    print(json.dumps(stats, indent=2, default=str))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from harness.cli import err_console
    from harness.models.loading import load_model
    from harness.quantizers.checkpoint import CheckpointError, write_checkpoint
    from harness.quantizers.runtime import compute_quantization, resolve_recipe

    calib_tasks = _calib_tasks(args)
    resolve_recipe(args.quant, calib_tasks)  # fail on a bad recipe before loading anything
    if args.format not in {"awq", "gptq", "compressed-tensors"}:
        raise HarnessError(f"--format {args.format}: expected awq, gptq or compressed-tensors")
    model = load_model(
        args.model,
        model_path=args.model_path,
        adapter=args.adapter,
        device=args.device,
        dtype=args.dtype,
    )
    start = time.perf_counter()
    qmodel = compute_quantization(model, args.quant, **_quant_options(args, calib_tasks))
    try:
        out = write_checkpoint(
            model.model,
            qmodel,
            model.processor,
            Path(args.out),
            args.format,
            overwrite=args.overwrite,
        )
    except (CheckpointError, FileExistsError) as exc:
        raise HarnessError(f"--out {args.out} --format {args.format}: {exc}") from exc
    err_console.print(
        f"wrote {len(qmodel.weights)} quantized Linear layers ({args.quant}, {args.format}) "
        f"to {out} in {time.perf_counter() - start:.1f}s",
        highlight=False,
    )
    return 0


def cmd_toy_data(args: argparse.Namespace) -> int:
    from harness.cli import err_console
    from harness.tasks.toy.data import generate_world

    start = time.perf_counter()
    out = generate_world(Path(args.out))
    err_console.print(f"wrote the synthetic world to {out} in {time.perf_counter() - start:.1f}s")
    return 0


def add_model_parsers(sub: Any, add_judge_flags: Any) -> None:
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
    p.set_defaults(fn=cmd_quantize)

    p = sub.add_parser("toy-data", help="write the synthetic world's mini benchmarks to a folder")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_toy_data)

    _add_run_parser(sub, add_judge_flags)


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


def _add_run_parser(sub: Any, add_judge_flags: Any) -> None:
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
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="first N documents of each task")
    p.add_argument("--num-frames", type=int, help="frames sampled per video (default per model)")
    p.add_argument("--data-root", type=Path, help="folder holding the benchmarks' official files")
    p.add_argument(
        "--data-file", action="append", metavar="TASK:ROLE=PATH", help="override one data file"
    )
    p.add_argument(
        "--gen", action="append", metavar="KEY=VALUE", help="override a generation kwarg"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no CI)")
    p.add_argument("--db", help="results DB (env HARNESS_DB; default harness-results.db)")
    p.add_argument("--no-db", action="store_true", help="do not store anything")
    p.add_argument("--log-samples", type=Path, help="write per-sample JSON lines into this folder")
    p.add_argument("--json", action="store_true", help="print one flat JSON object")
    add_judge_flags(p)
    p.set_defaults(fn=cmd_run)
