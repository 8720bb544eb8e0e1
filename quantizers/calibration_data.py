"""Image+text calibration inputs, encoded by the model's own adapter.

An ``-image_text`` recipe calibrates on what the model sees at evaluation: a
prompt with its images (or video frames), through the adapter's chat template,
aspect-ratio step and processor. Two sources:

* task documents (``--calib-tasks gqa,textvqa`` -> ``QuantRecipe.calib_tasks``):
  ``calib_samples`` documents drawn with the recipe's seed, spread evenly over
  the tasks. Calibrate on a split you do not report (a train split, or another
  benchmark), as AWQ and GPTQ calibrate on text the evaluation never reads;
* the model's own source (registry option ``calibration_images``, a hook
  inside ``harness.tasks`` returning ``(request, images)`` pairs): for toy-llava
  the scenes and questions of the *training* part of the synthetic world, never
  an evaluation scene.

Each sample is its own forward call, so no padding enters the statistics.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api.requests import Request
from harness.errors import HarnessError
from harness.quantizers.recipe import QuantRecipe


def _draw(pools: Sequence[Sequence[Any]], n: int, seed: int) -> list[Any]:
    """``n`` items spread evenly over ``pools`` (round robin over shuffled pools)."""
    rng = random.Random(seed)
    shuffled = [rng.sample(list(pool), len(pool)) for pool in pools]
    out: list[Any] = []
    depth = 0
    while len(out) < n and any(depth < len(pool) for pool in shuffled):
        for pool in shuffled:
            if depth < len(pool) and len(out) < n:
                out.append(pool[depth])
        depth += 1
    return out


def calibration_hook(adapter: Any, option: str) -> Callable[..., Any] | None:
    """The registry entry's own calibration source for ``option`` (``calibration_texts`` /
    ``calibration_images``): a hook inside ``harness.tasks``, e.g. a toy model's training
    world; None when the entry names none (then the built-in texts, or --calib-tasks)."""
    entry = getattr(adapter, "entry", None)
    path = (entry.options if entry is not None else {}).get(option)
    if path is None:
        return None
    from harness.hooks import resolve_hook

    return resolve_hook(str(path), f"model {entry.name}", option)


def task_requests(
    adapter: Any,
    names: Sequence[str],
    n: int,
    seed: int,
    *,
    data_root: Path | None = None,
    data_files: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Request]:
    """``n`` requests of the named tasks, as the evaluator would build them for ``adapter``."""
    from harness.task import get_task

    pools = []
    for name in names:
        task = get_task(name)
        docs, _ = task.load_docs(data_root, (data_files or {}).get(name))
        requests = task.build_requests(docs, data_root, adapter.family, {})
        pools.append([r for r in requests if r.visuals])
    requests = _draw(pools, n, seed)
    if not requests:
        raise HarnessError(
            f"--calib-tasks {','.join(names)}: no document with an image or video to calibrate on"
        )
    return requests


def image_text_inputs(
    adapter: Any,
    recipe: QuantRecipe,
    *,
    data_root: Path | None = None,
    data_files: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One model-input dict per calibration sample (``recipe.calib_samples`` of them)."""
    entry = getattr(adapter, "entry", None)
    options = entry.options if entry is not None else {}
    own = calibration_hook(adapter, "calibration_images")
    n = recipe.calib_samples
    if recipe.calib_tasks:
        requests = task_requests(
            adapter, recipe.calib_tasks, n, recipe.seed, data_root=data_root, data_files=data_files
        )
        pairs = [(r, adapter.load_visuals(r)) for r in requests]
    elif own is not None:
        pairs = own(n, recipe.seed, int(options.get("num_frames", 8)))
    else:
        raise HarnessError(
            f"--quant {recipe.name}: image+text calibration needs --calib-tasks TASK[,TASK] "
            "(the documents whose images and prompts calibrate the model)"
        )
    dtype = next(adapter.model.parameters()).dtype
    inputs = []
    for request, visuals in pairs:
        batch = dict(adapter.encode([request], [visuals]))
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                batch[key] = value.to(dtype)
        inputs.append(batch)
    return inputs
