"""Calibration data and the layer-by-layer runner shared by AWQ, GPTQ and SignRound.

* ``text_calibration``: ``n_samples`` blocks of ``seqlen`` tokens from a tokenizer over a
  built-in deterministic text source (seeded sentences over a fixed English word
  list; no downloads), or over caller-given strings (e.g. the toy world's
  vocabulary). The stream is cycled when it is shorter than needed.
* ``image_text``: the caller passes ready model inputs (processor outputs).
* ``capture_layer_inputs``: runs the model with a pre-hook on decoder layer 0 that
  records its input and keyword arguments (masks, position embeddings) and raises
  to stop the forward early.
* ``LayerStream``: the cached hidden states of one layer at a time (fp32), with the
  replay of a layer on them and inf/NaN checks that name the layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import QuantizationError

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from "
    "at which but have an they you were her she there been one all we their has would when "
    "if so no what can out other into more will time about some could them only these two "
    "may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three picture "
    "image shows a red car parked near green tree under blue sky with white clouds person "
    "holding cup sitting table dog running across grass cat sleeping on sofa question "
    "answer describe color number left right top bottom small large building street"
).split()


class CalibrationError(QuantizationError):
    """Bad calibration data or non-finite activations (the message names the layer)."""


def builtin_texts(n: int = 256, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English sentences (same output for the same ``n`` and ``seed``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(8, 24))
        words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), size=length)]
        out.append(" ".join(words).capitalize() + " .")
    return out


@dataclass
class CalibrationSet:
    batches: list[dict[str, Any]]  # model inputs, each a forward call
    source: str  # "text" | "image_text"
    n_samples: int
    n_tokens: int  # real tokens (attention mask ones)


def text_calibration(
    tokenizer,
    n_samples: int,
    seqlen: int,
    *,
    texts: Sequence[str] | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> CalibrationSet:
    """``n_samples`` blocks of ``seqlen`` token ids cut from one token stream."""
    if n_samples < 1 or seqlen < 2:
        raise CalibrationError(f"need n_samples >= 1 and seqlen >= 2, got {n_samples}, {seqlen}")
    texts = list(texts) if texts is not None else builtin_texts(seed=seed)
    if not texts:
        raise CalibrationError("no calibration texts")
    need = n_samples * seqlen
    stream: list[int] = []
    rng = np.random.default_rng(seed)
    rounds = 0
    while len(stream) < need:
        order = range(len(texts)) if rounds == 0 else rng.permutation(len(texts))
        for i in order:
            ids = tokenizer(texts[int(i)], add_special_tokens=False)["input_ids"]
            stream.extend(int(t) for t in ids)
            if len(stream) >= need:
                break
        rounds += 1
        if rounds > 10_000 or (rounds == 1 and not stream):
            raise CalibrationError("calibration texts tokenize to no tokens")
    ids = torch.tensor(stream[:need], dtype=torch.long).reshape(n_samples, seqlen)
    batches = [
        {
            "input_ids": ids[i : i + batch_size],
            "attention_mask": torch.ones_like(ids[i : i + batch_size]),
        }
        for i in range(0, n_samples, batch_size)
    ]
    return CalibrationSet(batches=batches, source="text", n_samples=n_samples, n_tokens=need)


def input_calibration(
    inputs: Iterable[dict[str, Any]], source: str = "image_text"
) -> CalibrationSet:
    """Wrap ready model inputs (one dict per forward call, e.g. processor outputs)."""
    batches = [dict(b) for b in inputs]
    if not batches:
        raise CalibrationError("no calibration inputs")
    n_samples = n_tokens = 0
    for b in batches:
        ids = b.get("input_ids")
        mask = b.get("attention_mask")
        if ids is not None:
            n_samples += int(ids.shape[0])
            n_tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        elif "inputs_embeds" in b:
            n_samples += int(b["inputs_embeds"].shape[0])
            n_tokens += int(b["inputs_embeds"].shape[0] * b["inputs_embeds"].shape[1])
    return CalibrationSet(batches=batches, source=source, n_samples=n_samples, n_tokens=n_tokens)


# -- capturing layer inputs --------------------------------------------------------------------


class _Stop(Exception):
    pass


def _to(value: Any, device: torch.device | None, float32: bool = True) -> Any:
    if isinstance(value, torch.Tensor):
        if float32 and value.is_floating_point():
            value = value.float()
        return value.to(device) if device is not None else value
    if isinstance(value, tuple):
        return tuple(_to(v, device, float32) for v in value)
    if isinstance(value, list):
        return [_to(v, device, float32) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device, float32) for k, v in value.items()}
    return value


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module, layer: nn.Module, batches: Sequence[dict[str, Any]], *, layer_name: str = ""
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Hidden states (fp32) and keyword arguments that ``layer`` receives for each batch."""
    hidden: list[torch.Tensor] = []
    kwargs_list: list[dict[str, Any]] = []

    def hook(_mod, args, kwargs):
        h = args[0] if args else kwargs.get("hidden_states")
        kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        for k in ("past_key_values", "past_key_value"):
            kw.pop(k, None)
        if "use_cache" in kw:
            kw["use_cache"] = False
        hidden.append(h.detach().float())
        kwargs_list.append(_to(kw, None))
        raise _Stop

    device = _model_device(model)
    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                call = _to(dict(batch), device, float32=False)
                call.setdefault("use_cache", False)
                model(**call)
            except _Stop:
                continue
            raise CalibrationError(f"the forward pass never reached {layer_name or 'layer 0'}")
    finally:
        handle.remove()
    for i, h in enumerate(hidden):
        check_finite(h, f"input of {layer_name or 'layer 0'} (calibration batch {i})")
    return hidden, kwargs_list


def check_finite(t: torch.Tensor, where: str) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise CalibrationError(f"{bad} NaN/inf values in the {where}")


def layer_output(out: Any) -> torch.Tensor:
    """Decoder layers return a tensor (transformers 5) or a tuple whose first item it is."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layer(
    layer: nn.Module, hidden: Sequence[torch.Tensor], kwargs_list: Sequence[dict[str, Any]]
) -> list[torch.Tensor]:
    return [layer_output(layer(h, **kw)).float() for h, kw in zip(hidden, kwargs_list, strict=True)]


@torch.no_grad()
def capture_module_io(
    layer: nn.Module,
    names: Sequence[str],
    hidden: Sequence[torch.Tensor],
    kwargs_list: Sequence[dict[str, Any]],
    *,
    keep_outputs: bool = True,
) -> tuple[dict[str, list[tuple[tuple, dict]]], dict[str, list[torch.Tensor]]]:
    """Run ``layer`` on every batch; record the (args, kwargs) and outputs of submodules ``names``."""
    inputs: dict[str, list[tuple[tuple, dict]]] = {n: [] for n in names}
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        mod = layer.get_submodule(n)

        def pre(_m, args, kwargs, n=n):
            inputs[n].append((tuple(args), dict(kwargs)))

        def post(_m, args, kwargs, out, n=n):
            if keep_outputs:
                outputs[n].append(layer_output(out).detach().float())

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))
    try:
        for h, kw in zip(hidden, kwargs_list, strict=True):
            layer(h, **kw)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs
