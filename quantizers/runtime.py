"""Wrap a loaded model adapter with a quantization recipe for evaluation.

``quantize_adapter`` calibrates and quantizes the adapter's model (or loads the
result from ``--quant-cache``), then installs it: 4-bit layers become
:class:`~harness.kernels.linear.W4A16Linear` (Triton on GPU, the torch
dequantize fallback on CPU), other bit widths get their dequantized weights
written back. The recipe name and hash go into the adapter's fingerprint, so
cached outputs of the FP16 model are never reused for the INT4 one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from harness.errors import HarnessError, QuantizationError
from harness.quantized import QuantizedModel
from harness.quantizers.apply import (
    UnreadableQuantizedError,
    apply_fake_quant,
    load_quantized,
    quantize_model,
    save_quantized,
)
from harness.quantizers.calibration_data import calibration_hook, image_text_inputs
from harness.quantizers.recipe import QuantRecipe, RecipeError, parse_recipe

PACK = 8  # AWQ GEMM packs 8 output columns per int32 word


def parse_quant(name: str) -> QuantRecipe:
    try:
        return parse_recipe(name)
    except RecipeError as exc:
        raise HarnessError(f"--quant {name}: {exc}") from None


def calibration_texts(adapter: Any) -> Sequence[str] | None:
    """Text calibration source: the registry entry's hook, else None (the built-in texts)."""
    hook = calibration_hook(adapter, "calibration_texts")
    return tuple(hook()) if hook is not None else None


def fit_recipe(recipe: QuantRecipe, model: nn.Module) -> QuantRecipe:
    """Clamp the calibration length to what the model's positions allow."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", config)
    limit = getattr(text, "max_position_embeddings", None)
    if limit and recipe.calib_seqlen > limit:
        return recipe.with_options(calib_seqlen=int(limit))
    return recipe


def install(model: nn.Module, qmodel: QuantizedModel, backend: str = "auto") -> dict[str, int]:
    """Put the quantized weights into ``model`` in place; returns counts per installation kind.

    4-bit layers whose out_features pack into AWQ words become ``W4A16Linear``; the
    rest (other bit widths) and AWQ's folded norms are written back by
    :func:`apply_fake_quant`.
    """
    from harness.kernels.linear import W4A16Linear

    packable = {
        n: qw for n, qw in qmodel.weights.items() if qw.bits == 4 and qw.shape[0] % PACK == 0
    }
    rest = QuantizedModel(
        {n: qw for n, qw in qmodel.weights.items() if n not in packable},
        qmodel.recipe,
        stats={"modified_params": qmodel.stats.get("modified_params", {})},
    )
    try:
        apply_fake_quant(model, rest)
    except ValueError as exc:
        raise HarnessError(f"installing {qmodel.recipe.get('method')} weights: {exc}") from exc
    for name, qw in packable.items():
        linear = model.get_submodule(name)
        if tuple(linear.weight.shape) != qw.shape:
            raise HarnessError(
                f"{name}: weight {tuple(linear.weight.shape)} vs quantized {qw.shape}"
            )
        bias = qw.bias if qw.bias is not None else linear.bias
        new = W4A16Linear.from_quantized(
            qw,
            bias=None if bias is None else bias.detach().float(),
            dtype=linear.weight.dtype,
            backend=backend,
        ).to(linear.weight.device)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return {"w4a16": len(packable), "dequantized": len(rest.weights)}


def resolve_recipe(recipe_name: str, calib_tasks: Sequence[str] = ()) -> QuantRecipe:
    """``--quant`` plus ``--calib-tasks`` (which implies image+text calibration)."""
    recipe = parse_quant(recipe_name)
    if calib_tasks:
        if not recipe.needs_calibration:
            raise HarnessError(f"--calib-tasks: {recipe.method} does not calibrate")
        from harness.task import get_task

        for name in calib_tasks:
            get_task(name)  # an unknown name fails here, naming the known tasks
        recipe = recipe.with_options(calib_source="image_text", calib_tasks=tuple(calib_tasks))
    return recipe


def search_identity(adapter: Any) -> str:
    """What a quantization search depends on, the key of ``--quant-cache`` and ``--quant-load``:
    the weights, their dtype and the adapter's prompt and image settings (image+text
    calibration goes through them), but not where the search ran (device, threads), so a
    search done on a GPU applies on a CPU."""
    weights = getattr(adapter, "weights_fingerprint", None)
    if weights is None:
        return adapter.fingerprint()
    info = {k: v for k, v in getattr(adapter, "info", {}).items() if k != "quant"}
    text = json.dumps(
        {"weights": weights(), "dtype": str(adapter.model.dtype), "info": info},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_quantization(
    adapter: Any,
    recipe_name: str,
    *,
    calib_tasks: Sequence[str] = (),
    data_root: Path | None = None,
    data_files: Mapping[str, Mapping[str, str]] | None = None,
    cache_dir: str | Path | None = None,
    dump: str | Path | None = None,
    load: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Calibrate and quantize ``adapter.model`` (unchanged), or load the result from the cache.

    Image+text recipes read their samples through the adapter (``calib_tasks`` documents
    under ``data_root`` / ``data_files``, or a toy model's training world). ``load``
    (``--quant-load``) reads a result written by ``dump`` (``--quant-dump``) instead of
    searching, after checking it was searched for this recipe on these weights.
    """
    recipe = fit_recipe(resolve_recipe(recipe_name, calib_tasks), adapter.model)
    fingerprint = search_identity(adapter)
    if load is not None:
        return load_dump(load, recipe, fingerprint)
    calib_inputs = None
    texts = None
    if recipe.calib_source == "image_text":

        def calib_inputs() -> list[dict[str, Any]]:
            return image_text_inputs(adapter, recipe, data_root=data_root, data_files=data_files)

    elif recipe.needs_calibration:
        texts = calibration_texts(adapter)
    try:
        qmodel = quantize_model(
            adapter.model,
            recipe,
            calib_inputs,
            tokenizer=adapter.tokenizer,
            texts=texts,
            cache_dir=cache_dir,
            fingerprint=fingerprint,
            log=log,
        )
    except QuantizationError as exc:  # calibration, fit, an unsupported model, a stale cache
        raise HarnessError(f"--quant {recipe_name}: {exc}") from exc
    if dump is not None:
        qmodel.stats["fingerprint"] = fingerprint
        save_quantized(qmodel, dump)
    return qmodel


def load_dump(path: str | Path, recipe: QuantRecipe, fingerprint: str) -> QuantizedModel:
    """A ``--quant-dump`` result, refused unless it holds ``recipe`` for these weights."""
    try:
        qmodel = load_quantized(path)
    except UnreadableQuantizedError as exc:
        raise HarnessError(
            f"--quant-load {path}: not a readable quantization dump ({exc})"
        ) from exc
    if qmodel.recipe != recipe.to_dict():
        held = QuantRecipe.from_dict(qmodel.recipe)
        raise HarnessError(
            f"--quant-load {path} holds {held.name} (hash {held.short_hash()}), "
            f"but --quant asks for {recipe.name} (hash {recipe.short_hash()})"
        )
    if qmodel.stats.get("fingerprint") != fingerprint:
        raise HarnessError(
            f"--quant-load {path} was searched on other weights (fingerprint "
            f"{qmodel.stats.get('fingerprint')}, this model {fingerprint})"
        )
    qmodel.stats["cache"] = "loaded"
    return qmodel


def quantize_adapter(
    adapter: Any, recipe_name: str, *, backend: str = "auto", **options: Any
) -> QuantizedModel:
    """Quantize ``adapter.model`` in place by recipe; the adapter's fingerprint then names it.

    ``options``: the keyword arguments of :func:`compute_quantization` (calibration tasks
    and data, cache, dump / load, log)."""
    qmodel = compute_quantization(adapter, recipe_name, **options)
    qmodel.stats["install"] = install(adapter.model, qmodel, backend)
    # The fitted recipe (calibration length clamped to the model) is what ran.
    recipe = QuantRecipe.from_dict(qmodel.recipe)
    adapter.info["quant"] = {"recipe": recipe.name, "hash": recipe.hash()}
    return qmodel
