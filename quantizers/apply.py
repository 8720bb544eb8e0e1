"""Quantize a model by recipe, write the result back for CPU evaluation, cache it on disk.

``quantize_model`` never changes the model: each decoder layer is processed on an
fp32 working copy. Parameters an algorithm changes outside the quantized Linear
layers (AWQ folds its scales into the RMSNorm weights) are returned in
``qmodel.stats["modified_params"]`` ({full parameter name: tensor}); ``apply_fake_quant``
writes both the dequantized weights and those parameters, and checkpoint writers
must take the modified parameters from there too.

Decoder layers use the recipe's algorithm; Linear layers outside them that the recipe
includes (vision tower, projector, lm_head) are rounded to nearest (listed in
``stats["rtn_fallback"]``), since text calibration gives them no activations. A recipe
that selects no layer, or a layer whose in_features is not a multiple of its group
size, is refused (:class:`RecipeDoesNotFit`): nothing the recipe names stays in 16 bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from harness.errors import QuantizationError
from harness.quantized import QuantizedModel, QuantizedWeight
from harness.quantizers.algorithms import ALGORITHMS
from harness.quantizers.calibration import (
    CalibrationError,
    CalibrationSet,
    capture_layer_inputs,
    check_finite,
    input_calibration,
    run_layer,
    text_calibration,
)
from harness.quantizers.layer import LayerInputs, LayerResult
from harness.quantizers.modules import find_parts, select_for_recipe
from harness.quantizers.recipe import QuantRecipe, parse_recipe
from harness.quantizers.rtn import rtn_linear

CACHE_FORMAT = 1
WEIGHTS_FILE = "quantized.safetensors"
META_FILE = "quantized.json"


def model_fingerprint(model: nn.Module) -> str:
    """A cheap identity of a model: class, parameter names/shapes/dtypes, and a few values."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        flat = p.detach().reshape(-1)[:64].float().cpu()
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(recipe: QuantRecipe, fingerprint: str) -> str:
    return hashlib.sha256(f"{recipe.hash()}|{fingerprint}".encode()).hexdigest()[:24]


CalibInputs = Iterable[dict[str, Any]] | CalibrationSet | Callable[[], Iterable[dict[str, Any]]]


def _calibration(
    recipe: QuantRecipe,
    calib_inputs: CalibInputs | None,
    tokenizer,
    texts: Sequence[str] | None,
) -> CalibrationSet:
    if callable(calib_inputs):  # built only when the cache misses
        calib_inputs = calib_inputs()
    if isinstance(calib_inputs, CalibrationSet):
        return calib_inputs
    if calib_inputs is not None:
        return input_calibration(calib_inputs, source=recipe.calib_source)
    if recipe.calib_source == "image_text":
        raise CalibrationError(
            f"recipe {recipe.name}: image_text calibration needs calib_inputs (processor outputs)"
        )
    if tokenizer is None:
        raise CalibrationError(f"recipe {recipe.name}: text calibration needs a tokenizer")
    return text_calibration(
        tokenizer,
        recipe.calib_samples,
        recipe.calib_seqlen,
        texts=texts,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
    )


def quantize_model(
    model: nn.Module,
    recipe: str | QuantRecipe,
    calib_inputs: CalibInputs | None = None,
    tokenizer=None,
    *,
    texts: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    log: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Quantize ``model`` by ``recipe`` (name or ``QuantRecipe``); the model is not modified.

    Calibration: ``calib_inputs`` (model input dicts, e.g. image+text processor outputs,
    a ``CalibrationSet``, or a function returning either, called only on a cache miss),
    else text blocks from ``tokenizer`` over ``texts`` (default: the built-in
    deterministic source). With ``cache_dir`` the result is stored under
    ``cache_dir/<key of recipe hash + fingerprint>`` and loaded from there next time
    (``stats["cache"] == "hit"``); ``fingerprint`` defaults to ``model_fingerprint(model)``.
    An entry that cannot be read (truncated, garbled) is searched again and overwritten
    (``stats["cache"] == "replaced"``, the read error in ``stats["cache_error"]``).
    """
    recipe = parse_recipe(recipe)
    say = log or (lambda _m: None)
    cache_path = None
    unreadable = None
    if cache_dir is not None:
        fingerprint = fingerprint or model_fingerprint(model)
        cache_path = Path(cache_dir) / cache_key(recipe, fingerprint)
        if (cache_path / META_FILE).is_file():
            try:
                qmodel = load_quantized(cache_path)
            except UnreadableQuantizedError as exc:
                unreadable = str(exc)
                say(f"quant cache {cache_path} is unreadable ({unreadable}); searching again")
            else:
                if qmodel.recipe != recipe.to_dict():
                    held = qmodel.recipe.get("method"), qmodel.recipe.get("bits")
                    raise QuantizationError(
                        f"quant cache {cache_path} holds another recipe ({held[0]} w{held[1]}, "
                        f"not {recipe.name}): a stale or foreign entry; delete it or pass "
                        "another --quant-cache"
                    )
                qmodel.stats["cache"] = "hit"
                qmodel.stats["cache_path"] = str(cache_path)
                return qmodel
    started = time.perf_counter()
    qmodel = _quantize(model, recipe, calib_inputs, tokenizer, texts, say)
    qmodel.stats["seconds"] = time.perf_counter() - started
    if cache_path is not None:
        qmodel.stats["fingerprint"] = fingerprint
        save_quantized(qmodel, cache_path)
        qmodel.stats["cache"] = "miss" if unreadable is None else "replaced"
        if unreadable is not None:
            qmodel.stats["cache_error"] = unreadable
        qmodel.stats["cache_path"] = str(cache_path)
    return qmodel


def _mse(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    err = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True))
    return err / max(1, sum(y.numel() for y in b))


@torch.no_grad()
def _set_weights(layer: nn.Module, qweights: dict[str, QuantizedWeight]) -> None:
    for n, qw in qweights.items():
        lin = layer.get_submodule(n)
        lin.weight.copy_(qw.dequantize(lin.weight.dtype).to(lin.weight.device))
        if qw.bias is not None and lin.bias is not None:
            lin.bias.copy_(qw.bias.to(lin.bias.dtype).to(lin.bias.device))


class RecipeDoesNotFit(QuantizationError):
    """The recipe cannot quantize this model as its name says (the message says why)."""


def check_recipe_fits(model: nn.Module, recipe: QuantRecipe, names: Sequence[str]) -> None:
    """Refuse a recipe that would quantize nothing, or leave a layer it selects in full
    precision (its in_features not a multiple of the group size): the run's label would
    claim a precision the model does not have."""
    if not names:
        raise RecipeDoesNotFit(f"recipe {recipe.name} selects no Linear layer of this model")
    misfits = [
        (n, model.get_submodule(n).in_features)
        for n in names
        if model.get_submodule(n).in_features % recipe.group_size
    ]
    if misfits:
        sizes = sorted({k for _, k in misfits})
        raise RecipeDoesNotFit(
            f"group size {recipe.group_size} does not divide the in_features of "
            f"{len(misfits)} of the {len(names)} layers it selects (e.g. {misfits[0][0]}: "
            f"{misfits[0][1]}; sizes {sizes}); choose a group size that divides them"
        )


def _quantize(model, recipe, calib_inputs, tokenizer, texts, log) -> QuantizedModel:
    parts = find_parts(model)
    selection = select_for_recipe(model, recipe, parts)
    check_recipe_fits(model, recipe, selection.quantize)
    quantize = list(selection.quantize)
    not_quantized = list(selection.keep)
    weights: dict[str, QuantizedWeight] = {}
    modified: dict[str, torch.Tensor] = {}
    stats: dict[str, Any] = {
        "method": recipe.method,
        "recipe_name": recipe.name,
        "categories": {n: selection.category[n] for n in selection.category},
        "skipped": {},  # kept in the stats' schema: a recipe that fits skips nothing
        "layer_errors": {},
        "rtn_fallback": [],
        "layers": {},
    }
    stats["warnings"] = []
    if parts.lm_head in quantize:
        head = model.get_submodule(parts.lm_head)
        if any(p is head.weight for p in _embedding_weights(model)):
            stats["warnings"].append(
                f"{parts.lm_head} shares its weight with the input embedding: fake quantization "
                "changes the embedding too"
            )
    decoder = {n for n in quantize if selection.category[n] == "decoder"}
    extra = [n for n in quantize if n not in decoder]

    if not ALGORITHMS[recipe.method].needs_calibration or not decoder:
        for n in quantize:
            weights[n] = rtn_linear(
                model.get_submodule(n), recipe.bits, recipe.group_size, recipe.symmetric
            )
        stats["calib_tokens"] = 0
    else:
        calib = _calibration(recipe, calib_inputs, tokenizer, texts)
        stats.update(
            calib_source=calib.source, calib_samples=calib.n_samples, calib_tokens=calib.n_tokens
        )
        layers = [model.get_submodule(n) for n in parts.layer_names]
        fp_in, kwargs_list = capture_layer_inputs(
            model, layers[0], calib.batches, layer_name=parts.layer_names[0]
        )
        q_in = fp_in
        for index, (layer_name, layer) in enumerate(zip(parts.layer_names, layers, strict=True)):
            t0 = time.perf_counter()
            prefix = layer_name + "."
            targets = [n[len(prefix) :] for n in quantize if n.startswith(prefix)]
            work = copy.deepcopy(layer).float()
            fp_out = run_layer(work, fp_in, kwargs_list)
            for i, t in enumerate(fp_out):
                check_finite(t, f"output of {layer_name} (calibration batch {i})")
            algorithm = ALGORITHMS[recipe.method]
            inputs = LayerInputs(fp_in, q_in, fp_out, kwargs_list)
            result = (
                algorithm.quantize_layer(work, targets, inputs, recipe)
                if targets
                else LayerResult({})
            )
            qw, layer_mod, info = result.weights, result.modified, dict(result.info)
            _set_weights(work, qw)
            on_fp = run_layer(work, fp_in, kwargs_list)  # the quantized layer on FP inputs
            if algorithm.propagates_quantized:  # the next layer sees quantized outputs
                q_out = on_fp if q_in is fp_in else run_layer(work, q_in, kwargs_list)
                for i, t in enumerate(q_out):
                    check_finite(t, f"output of quantized {layer_name} (calibration batch {i})")
            else:  # AWQ: the next layer sees the full-precision output
                q_out = fp_out
            stats["layer_errors"][layer_name] = _mse(on_fp, fp_out)
            info["seconds"] = time.perf_counter() - t0
            stats["layers"][layer_name] = _jsonable(info)
            for n, w in qw.items():
                weights[prefix + n] = w
            for n, p in layer_mod.items():
                modified[prefix + n] = p.detach().float().cpu()
            fp_in, q_in = fp_out, q_out
            log(
                f"{recipe.name}: layer {index + 1}/{len(layers)} {layer_name} "
                f"({info['seconds']:.1f}s, output error {stats['layer_errors'][layer_name]:.3e})"
            )
            del work
        for n in extra:
            weights[n] = rtn_linear(
                model.get_submodule(n), recipe.bits, recipe.group_size, recipe.symmetric
            )
            stats["rtn_fallback"].append(n)
    stats["modified_params"] = modified
    ordered = {n: weights[n] for n in quantize if n in weights}
    return QuantizedModel(
        weights=ordered, recipe=recipe.to_dict(), not_quantized=not_quantized, stats=stats
    )


def _embedding_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{tuple(value.shape)}"
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


@torch.no_grad()
def apply_fake_quant(model: nn.Module, qmodel: QuantizedModel) -> nn.Module:
    """Write dequantized weights (and AWQ's folded norms) into ``model`` in place; returns it."""
    for name, qw in qmodel.weights.items():
        lin = model.get_submodule(name)
        if tuple(lin.weight.shape) != qw.shape:
            raise ValueError(f"{name}: weight {tuple(lin.weight.shape)} vs quantized {qw.shape}")
        lin.weight.copy_(qw.dequantize(torch.float32).to(lin.weight.device, lin.weight.dtype))
        if qw.bias is not None:
            if lin.bias is None:
                raise ValueError(f"{name}: quantized weight carries a bias, the module has none")
            lin.bias.copy_(qw.bias.to(lin.bias.device, lin.bias.dtype))
    params = dict(model.named_parameters())
    for name, value in qmodel.stats.get("modified_params", {}).items():
        p = params[name]
        p.copy_(value.to(p.device, p.dtype))
    return model


# -- on-disk cache ---------------------------------------------------------------------------


def save_quantized(qmodel: QuantizedModel, directory: str | Path) -> Path:
    """``quantized.safetensors`` (codes/scales/zeros/bias, modified params) + ``quantized.json``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for name, qw in qmodel.weights.items():
        tensors[f"{name}::codes"] = qw.codes.contiguous().cpu()
        tensors[f"{name}::scales"] = qw.scales.float().contiguous().cpu()
        tensors[f"{name}::zeros"] = qw.zeros.contiguous().cpu()
        if qw.bias is not None:
            tensors[f"{name}::bias"] = qw.bias.float().contiguous().cpu()
        layout[name] = {"bits": qw.bits, "group_size": qw.group_size, "symmetric": qw.symmetric}
    modified = qmodel.stats.get("modified_params", {})
    for name, value in modified.items():
        tensors[f"{name}::param"] = value.float().contiguous().cpu()
    stats = {k: v for k, v in qmodel.stats.items() if k != "modified_params"}
    meta = {
        "format": CACHE_FORMAT,
        "recipe": qmodel.recipe,
        "weights": layout,
        "modified_params": list(modified),
        "not_quantized": qmodel.not_quantized,
        "stats": _jsonable(stats),
    }
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    tmp_meta = directory / (META_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True))
    tmp_meta.replace(directory / META_FILE)  # written last: its presence marks a complete entry
    return directory


class UnreadableQuantizedError(QuantizationError):
    """A saved quantization result that cannot be read (missing, truncated or garbled)."""


def load_quantized(directory: str | Path) -> QuantizedModel:
    """Read what :func:`save_quantized` wrote; :class:`UnreadableQuantizedError` if it can't."""
    try:
        return _read_quantized(Path(directory))
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise UnreadableQuantizedError(f"{type(exc).__name__}: {exc}") from exc


def _read_quantized(directory: Path) -> QuantizedModel:
    from safetensors.torch import load_file

    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"{directory}: unknown quant cache format {meta.get('format')!r}")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    weights = {}
    for name, lay in meta["weights"].items():
        weights[name] = QuantizedWeight(
            codes=tensors[f"{name}::codes"],
            scales=tensors[f"{name}::scales"],
            zeros=tensors[f"{name}::zeros"],
            bits=int(lay["bits"]),
            group_size=int(lay["group_size"]),
            symmetric=bool(lay["symmetric"]),
            bias=tensors.get(f"{name}::bias"),
        )
    stats = dict(meta.get("stats", {}))
    stats["modified_params"] = {n: tensors[f"{n}::param"] for n in meta["modified_params"]}
    return QuantizedModel(
        weights=weights,
        recipe=meta["recipe"],
        not_quantized=list(meta["not_quantized"]),
        stats=stats,
    )
