"""``harness quantize``: quantize a model and write a checkpoint that other tools load."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from harness.cli.model_flags import (
    add_calibration_flags,
    add_threads,
    calib_task_names,
    load_model_logged,
    normal_quant,
    quant_options,
    set_threads,
)
from harness.errors import HarnessError

log = logging.getLogger("harness.cli")


def register(sub: Any) -> None:
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
    add_calibration_flags(p)
    p.add_argument("--data-root", type=Path, help="folder holding --calib-tasks' files")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    add_threads(p)
    p.set_defaults(fn=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    from harness.quantizers.checkpoint import write_checkpoint
    from harness.quantizers.formats.base import CheckpointError
    from harness.quantizers.runtime import compute_quantization, resolve_recipe

    calib_tasks = calib_task_names(args)
    quant = normal_quant(args.quant)
    resolve_recipe(quant, calib_tasks)  # fail on a bad recipe before loading anything
    if args.format not in {"awq", "gptq", "compressed-tensors"}:
        raise HarnessError(f"--format {args.format}: expected awq, gptq or compressed-tensors")
    out_dir = Path(args.out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not args.overwrite:
        raise HarnessError(
            f"--out {args.out}: exists and is not an empty folder; pass --overwrite to replace it"
        )
    set_threads(args.threads)
    model = load_model_logged(args, args.dtype, {})
    start = time.perf_counter()
    qmodel = compute_quantization(model, quant, **quant_options(args, calib_tasks))
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
