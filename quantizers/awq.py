"""AWQ: activation-aware per-channel scaling, then clip search, then group quantization.

Per decoder layer (a working fp32 copy), for each of the four Llama-like scaling
groups in order (input_layernorm -> q,k,v; v -> o when shapes match;
post_attention_layernorm -> gate,up; up -> down):

1. run the current layer on the calibration inputs, recording the inputs ``x`` and
   output of the inspected module (attention, o_proj, MLP, down_proj);
2. ``x_mean = mean |x|`` per input channel; for ratio in {0, 1/n, ..., (n-1)/n}:
   ``s = clamp(x_mean^ratio, 1e-4)``, ``s /= sqrt(max s * min s)``; replace each Linear's
   weight by ``Q(W * s) / s`` and take the output MSE of the inspected module;
3. fold the best ``s``: previous norm (or Linear) ``/= s``, the group's weights ``*= s``.

Then (unless disabled) the clip search for every Linear but q and k: per group try
``max_val = |w|max * (1 - i/n)`` for ``i < n/2``, keep the value with the least error
of the group's partial output on ~512 sampled input tokens. Ratio 0 is plain RTN,
so the search never does worse than RTN on its own loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from harness.quantizers.calibration import capture_module_io, layer_output
from harness.quantizers.group_quant import fake_quantize, quantize_weight
from harness.quantizers.layer import LayerInputs, LayerResult
from harness.quantizers.modules import ScaleGroup, llama_scale_groups

NO_CLIP_KINDS = ("attn_in",)


def _relative(name: str, inspect: str) -> str:
    if name == inspect:
        return "weight"
    return name[len(inspect) + 1 :] + ".weight"


@torch.no_grad()
def search_scale(
    layer: nn.Module,
    group: ScaleGroup,
    hidden: Sequence[torch.Tensor],
    kwargs_list: Sequence[dict[str, Any]],
    recipe,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Best per-input-channel scale for ``group`` and search info (best ratio, losses)."""
    inputs, outputs = capture_module_io(layer, [group.inspect], hidden, kwargs_list)
    calls, targets = inputs[group.inspect], outputs[group.inspect]
    inspect = layer.get_submodule(group.inspect)
    x_sum, count = None, 0
    for args, kwargs in calls:
        x = args[0] if args else kwargs["hidden_states"]
        x = x.float().reshape(-1, x.shape[-1])
        x_sum = x.abs().sum(0) if x_sum is None else x_sum + x.abs().sum(0)
        count += x.shape[0]
    x_mean = x_sum / count
    weights = {n: layer.get_submodule(n).weight.float() for n in group.linears}
    w_mean = None
    if recipe.duo_scaling:
        cat = torch.cat(list(weights.values()), 0)
        g = cat.reshape(cat.shape[0], -1, recipe.group_size).abs()
        g = g / g.amax(-1, keepdim=True).clamp(min=1e-8)
        w_mean = g.reshape(cat.shape).mean(0)
    losses = []
    best, best_ratio, best_s = math.inf, 0.0, torch.ones_like(x_mean)
    for step in range(recipe.n_grid):
        ratio = step / recipe.n_grid
        if w_mean is not None:
            s = x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)
        else:
            s = x_mean.pow(ratio)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        params = {
            _relative(n, group.inspect): fake_quantize(
                w * s.view(1, -1), recipe.bits, recipe.group_size, recipe.symmetric
            )
            / s.view(1, -1)
            for n, w in weights.items()
        }
        err, total = 0.0, 0
        for (args, kwargs), ref in zip(calls, targets, strict=True):
            out = layer_output(functional_call(inspect, params, args, kwargs)).float()
            err += float((out - ref).pow(2).sum())
            total += ref.numel()
        loss = err / total
        losses.append(loss)
        if loss < best:
            best, best_ratio, best_s = loss, ratio, s.clone()
    return best_s, {"ratio": best_ratio, "loss": best, "rtn_loss": losses[0]}


@torch.no_grad()
def fold_scale(layer: nn.Module, group: ScaleGroup, s: torch.Tensor) -> None:
    """prev ``/= s`` (norm weight/bias or Linear output rows), group weights ``*= s``.

    The layer computes the same function afterwards (exactly, up to rounding).
    """
    prev = layer.get_submodule(group.prev)
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s.to(prev.bias.dtype))
    for n in group.linears:
        lin = layer.get_submodule(n)
        lin.weight.mul_(s.view(1, -1).to(lin.weight.dtype))


def _sample_tokens(x: torch.Tensor, n: int) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] <= n:
        return x
    idx = torch.linspace(0, x.shape[0] - 1, n, device=x.device).round().long()
    return x[idx]


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, recipe) -> torch.Tensor:
    """Per-group max |w| [N, K/G] that minimises the group's partial output error on ``x``."""
    g = recipe.group_size
    n_out, k = w.shape
    ng = k // g
    xg = x.float().reshape(1, x.shape[0], ng, g)  # [1, T, ng, G]
    best_max_all = []
    chunk = max(1, 2**24 // max(1, x.shape[0] * k))
    for start in range(0, n_out, chunk):
        wc = w[start : start + chunk].float()
        wg = wc.reshape(wc.shape[0], 1, ng, g)
        org_max = wg.abs().amax(-1, keepdim=True)  # [n, 1, ng, 1]
        org_out = (xg * wg).sum(-1)  # [n, T, ng]
        best_err = torch.full(org_max.shape[:1] + org_max.shape[2:3], math.inf, device=w.device)
        best_max = org_max[:, 0, :, 0].clone()
        for i in range(int(recipe.n_grid * 0.5)):
            max_val = org_max * (1 - i / recipe.n_grid)  # [n, 1, ng, 1]
            clip = max_val[:, 0, :, 0]
            q = fake_quantize(wc, recipe.bits, g, recipe.symmetric, clip=clip)
            cur = (xg * q.reshape(wc.shape[0], 1, ng, g)).sum(-1)
            err = (cur - org_out).pow(2).mean(1)  # [n, ng]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, clip, best_max)
        best_max_all.append(best_max)
    return torch.cat(best_max_all, 0)


@torch.no_grad()
def awq_layer(layer: nn.Module, targets: Sequence[str], inputs: LayerInputs, recipe) -> LayerResult:
    """Scale, fold, clip and quantize ``targets`` of one fp32 decoder layer (modified in place).

    AWQ searches on the full-precision inputs. The result's ``modified`` holds the changed
    non-quantized parameters by relative name (the folded norms).
    """
    hidden, kwargs_list = inputs.fp_inputs, inputs.kwargs
    target_set = set(targets)
    groups = llama_scale_groups(layer) or []
    info: dict[str, Any] = {"groups": {}}
    modified: dict[str, torch.Tensor] = {}
    no_clip: set[str] = set()
    for group in groups:
        if group.kind in NO_CLIP_KINDS:
            no_clip.update(n for n in group.linears if not n.endswith("v_proj"))
        prev = layer.get_submodule(group.prev)
        prev_ok = (
            (group.prev in target_set)
            if isinstance(prev, nn.Linear)
            else (getattr(prev, "weight", None) is not None)
        )
        if not prev_ok or not all(n in target_set for n in group.linears):
            info["groups"][group.kind] = "skipped"
            continue
        s, ginfo = search_scale(layer, group, hidden, kwargs_list, recipe)
        fold_scale(layer, group, s)
        info["groups"][group.kind] = ginfo
        if not isinstance(prev, nn.Linear):
            for pname, p in prev.named_parameters(recurse=False):
                modified[f"{group.prev}.{pname}"] = p.detach().clone()
    clips: dict[str, torch.Tensor] = {}
    if recipe.clip_search:
        clip_names = [n for n in targets if n not in no_clip]
        if clip_names:
            inputs, _ = capture_module_io(
                layer, clip_names, hidden, kwargs_list, keep_outputs=False
            )
            for n in clip_names:
                xs = [a[0] if a else kw["hidden_states"] for a, kw in inputs[n]]
                x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs], 0)
                x = _sample_tokens(x, recipe.clip_tokens)
                clips[n] = search_clip(layer.get_submodule(n).weight.float(), x, recipe)
    out = {}
    for n in targets:
        lin = layer.get_submodule(n)
        out[n] = quantize_weight(
            lin.weight,
            recipe.bits,
            recipe.group_size,
            recipe.symmetric,
            clip=clips.get(n),
            bias=lin.bias,
        )
    return LayerResult(out, modified, info)
