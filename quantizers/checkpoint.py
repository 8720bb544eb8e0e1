"""Write a quantized model as a standard Hugging Face model folder other tools load.

Public API::

    from harness.quantizers.checkpoint import write_checkpoint
    path = write_checkpoint(model, qmodel, processor, "out/llava-awq", "awq")

The folder holds ``config.json`` (the model's config plus the format's
``quantization_config``), ``model.safetensors`` (metadata ``{"format": "pt"}``),
``generation_config.json`` when the model has one, the tokenizer / processor files
(``save_pretrained``) and ``harness_quant.json`` (recipe, its hash, a stats
summary). Quantized Linear layers are stored as the format's tensors (see
``harness.quantizers.formats``); every other tensor is the model's own, except the
parameters an algorithm changed outside the quantized layers (AWQ's folded norm /
previous-Linear weights, ``qmodel.stats["modified_params"]``), which are written in
their place, cast to the parameter's dtype.

The folder is written into a temporary sibling of ``out_dir`` and renamed into place
at the end, so a failed or interrupted write never leaves a half-written model at
``out_dir``. An existing non-empty ``out_dir`` is refused unless ``overwrite=True``.

Bits, group size and symmetry must be the same for every quantized layer (the
formats' configs describe one scheme). Non-quantized tensors keep the model's dtype
unless ``dtype`` is given (floating tensors are then cast to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.quantized import QuantizedModel, QuantizedWeight
from harness.quantizers.formats import get_writer
from harness.quantizers.formats.base import (
    CONFIG_NAME,
    HARNESS_META,
    META_VERSION,
    WEIGHTS_NAME,
    CheckpointError,
    FormatWriter,
    Scheme,
    WriteContext,
)


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def common_scheme(weights: dict[str, QuantizedWeight]) -> Scheme:
    if not weights:
        raise CheckpointError("the quantized model has no quantized layers")
    schemes = {Scheme(w.bits, w.group_size, bool(w.symmetric)) for w in weights.values()}
    if len(schemes) != 1:
        raise CheckpointError(
            "quantized layers use different bits / group sizes / symmetry "
            f"({sorted(schemes, key=str)}); the checkpoint formats describe one scheme"
        )
    return schemes.pop()


def recipe_hash(recipe: dict[str, Any]) -> str:
    """The recipe's own hash (``QuantRecipe.hash``), else a sha256 of its canonical JSON."""
    from harness.quantizers.recipe import QuantRecipe

    try:
        return QuantRecipe.from_dict(dict(recipe)).hash()
    except Exception:  # noqa: BLE001 - a foreign / older recipe dict
        blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{tuple(value.shape)}"
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def stats_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """The small, JSON-able part of ``qmodel.stats`` (no tensors, no per-layer detail)."""
    keep = (
        "method",
        "recipe_name",
        "calib_source",
        "calib_samples",
        "calib_tokens",
        "seconds",
        "skipped",
        "rtn_fallback",
        "warnings",
        "fingerprint",
    )
    out = {k: _jsonable(stats[k]) for k in keep if k in stats}
    errors = stats.get("layer_errors") or {}
    if errors:
        values = [float(v) for v in errors.values()]
        out["layer_error_mean"] = sum(values) / len(values)
        out["layer_error_max"] = max(values)
    return out


def _resolve_scale_dtype(
    writer: FormatWriter, model: nn.Module, requested: torch.dtype | None
) -> torch.dtype:
    if requested is None:
        if writer.scale_dtype is not None:
            return writer.scale_dtype
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        sixteen = [d for d in (torch.bfloat16, torch.float16) if d in dtypes]
        return sixteen[0] if sixteen else torch.float16
    if requested not in writer.scale_dtypes:
        raise CheckpointError(
            f"format {writer.name!r} stores scales as one of {writer.scale_dtypes}, "
            f"got scale_dtype={requested}"
        )
    return requested


def build_state_dict(
    model: nn.Module,
    qmodel: QuantizedModel,
    writer: FormatWriter,
    scale_dtype: torch.dtype,
    options: dict[str, Any],
    dtype: torch.dtype | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors, and the names dropped as tied duplicates."""
    state = model.state_dict()
    modified = dict(qmodel.stats.get("modified_params") or {})
    for name in modified:
        if name not in state:
            raise CheckpointError(f"modified parameter {name!r} is not in the model's state dict")

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.contiguous()

    out: dict[str, torch.Tensor] = {}
    quantized = qmodel.weights
    replaced = {f"{m}.weight" for m in quantized}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    dropped: list[str] = []
    for name, tensor in state.items():
        if name in replaced:
            continue
        if name in modified:
            value = modified[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"modified parameter {name}: shape {tuple(value.shape)} "
                    f"vs model {tuple(tensor.shape)}"
                )
            out[name] = cast(value.to(tensor.dtype))
            continue
        # Tied parameters (input embedding / lm_head) share storage: safetensors refuses
        # shared tensors and HF loaders re-tie them from the config, so write one copy.
        if tensor.numel():
            key = (
                tensor.untyped_storage().data_ptr(),
                tensor.storage_offset(),
                tuple(tensor.shape),
                tensor.dtype,
            )
            if key in seen:
                dropped.append(name)
                continue
            seen[key] = name
        out[name] = cast(tensor)
    for module, qw in quantized.items():
        lin = model.get_submodule(module)
        if not isinstance(lin, nn.Linear):
            raise CheckpointError(f"{module} is not an nn.Linear ({type(lin).__name__})")
        if tuple(lin.weight.shape) != qw.shape:
            raise CheckpointError(
                f"{module}: weight {tuple(lin.weight.shape)} vs quantized {qw.shape}"
            )
        for suffix, tensor in writer.pack(module, qw, scale_dtype, options).items():
            out[f"{module}.{suffix}"] = tensor.detach().cpu().contiguous()
        if qw.bias is not None:
            if lin.bias is None:
                raise CheckpointError(
                    f"{module}: quantized weight carries a bias, the module has none"
                )
            out[f"{module}.bias"] = cast(qw.bias.to(lin.bias.dtype))
    return out, dropped


def _write_config(model: nn.Module, folder: Path, quant_config: dict[str, Any], dtype) -> None:
    model.config.save_pretrained(folder)
    path = folder / CONFIG_NAME
    data = json.loads(path.read_text())
    data["quantization_config"] = quant_config
    if dtype is not None:
        data["dtype"] = str(dtype).removeprefix("torch.")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(model, "can_generate", lambda: False)():
        try:
            gen.save_pretrained(folder)
        except Exception:  # noqa: BLE001 - an invalid generation config is not fatal
            pass


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{out_dir} exists and is not empty; replace it with --overwrite "
                "(overwrite=True in Python)"
            )


def write_checkpoint(
    model: nn.Module,
    qmodel: QuantizedModel,
    processor_or_tokenizer,
    out_dir: str | Path,
    format: str,
    *,
    overwrite: bool = False,
    scale_dtype: torch.dtype | None = None,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> Path:
    """Write ``model`` with ``qmodel``'s quantized layers as an HF folder in ``format``.

    ``format``: a key of ``harness.quantizers.formats.WRITERS`` (``awq``, ``gptq``,
    ``compressed-tensors``). ``scale_dtype``: the stored scale dtype (AWQ / GPTQ: fp16
    only; compressed-tensors: fp16, bf16 or fp32, default the model's 16-bit dtype,
    fp16 for an fp32 model). ``dtype``: cast the non-quantized floating tensors (default:
    keep the model's). ``processor_or_tokenizer`` may be None. Format options go in
    ``options`` (see each format's module). Returns the folder's path.
    """
    writer = get_writer(format)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    scheme = common_scheme(qmodel.weights)
    writer.check(scheme, qmodel.weights, options)
    sdtype = _resolve_scale_dtype(writer, model, scale_dtype)
    all_linears = linear_names(model)
    missing = [n for n in qmodel.weights if n not in set(all_linears)]
    if missing:
        raise CheckpointError(f"quantized layers not found as nn.Linear in the model: {missing}")
    quantized = [n for n in all_linears if n in qmodel.weights]
    unquantized = [n for n in all_linears if n not in qmodel.weights]
    ctx = WriteContext(model, qmodel, scheme, quantized, unquantized, dict(options))
    quant_config = writer.config(ctx)
    tensors, dropped = build_state_dict(model, qmodel, writer, sdtype, options, dtype)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        _write_config(model, tmp, quant_config, dtype)
        if processor_or_tokenizer is not None:
            processor_or_tokenizer.save_pretrained(tmp)
        modified = sorted((qmodel.stats.get("modified_params") or {}).keys())
        meta = {
            "harness_quant_version": META_VERSION,
            "format": writer.name,
            "recipe": _jsonable(qmodel.recipe),
            "recipe_hash": recipe_hash(qmodel.recipe),
            "scheme": {
                "bits": scheme.bits,
                "group_size": scheme.group_size,
                "symmetric": scheme.symmetric,
            },
            "scale_dtype": str(sdtype).removeprefix("torch."),
            "quantized_modules": quantized,
            "not_quantized": unquantized,
            "modified_params": modified,
            "tied_dropped": dropped,
            "stats": stats_summary(qmodel.stats),
        }
        (tmp / HARNESS_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        _umask_modes(tmp)
        _replace_dir(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _umask_modes(folder: Path) -> None:
    """Give the finished folder the modes a plain ``mkdir`` / ``open`` would (mkdtemp makes it
    private, 0700), so other users and tools can read the checkpoint as with any other."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_dir(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``out_dir`` (re-checking it just before)."""
    _check_out_dir(out_dir, overwrite)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)  # put the previous checkpoint back
        raise
    shutil.rmtree(old, ignore_errors=True)
