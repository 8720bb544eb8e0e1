"""What the commands that load a model share (``run``, ``quantize``): precision and dtype
flags, CPU threads, quant-recipe calibration flags, and loading with a first message."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from harness.cli.common import positive_int
from harness.errors import HarnessError

log = logging.getLogger("harness.cli")

PLAIN_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
DTYPE_LABELS = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


def load_dtype(quant: str | None, dtype: str | None) -> str:
    """The dtype to load the model in: --quant fp16/bf16/fp32 fixes it, recipes use --dtype."""
    if quant in PLAIN_PRECISIONS:
        if dtype not in (None, "auto") and dtype != quant:
            raise HarnessError(f"--quant {quant} conflicts with --dtype {dtype}")
        return quant
    return dtype or "auto"


def normal_quant(quant: str | None) -> str | None:
    """``--quant`` spelled canonically: ``FP16`` is fp16, ``AWQ-W4G128`` is awq-w4g128."""
    if quant is None:
        return None
    text = quant.strip().lower()
    if text in PLAIN_PRECISIONS:
        return text
    from harness.quantizers.runtime import parse_quant

    return parse_quant(quant).name


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def add_threads(p: argparse.ArgumentParser) -> None:

    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for torch (default: torch's own choice); recorded with the run, "
        "since CPU sums can round differently with another thread count",
    )


def calib_task_names(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in (args.calib_tasks or "").split(",") if t.strip()]


def quant_options(
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


def add_calibration_flags(p: argparse.ArgumentParser) -> None:
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
