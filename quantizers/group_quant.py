"""Group-wise integer quantizer (the spec's formulas), in fp32.

Asymmetric (AWQ's default), per group of G input channels of each output row::

    scale = (max - min) / (2^b - 1)
    zero  = clamp(-round(min / scale), 0, 2^b - 1)
    q     = clamp(round(w / scale) + zero, 0, 2^b - 1);   w_hat = (q - zero) * scale

The group's range is widened to include 0 (``min <= 0 <= max``) as GPTQ does: for
groups that straddle zero, which is every realistic group, this is exactly the
formula above; for a group of one sign it keeps the rounding error within scale/2
instead of clamping the far end.

Symmetric: ``scale = max|w| / 2^(b-1)``, ``q in [-2^(b-1), 2^(b-1) - 1]``, stored as
codes ``q + 2^(b-1)`` with zero point ``2^(b-1)`` (the ``QuantizedWeight`` contract).
The largest positive value can only reach ``(2^(b-1) - 1) * scale``.

``clip`` ([N, K/G], positive) clamps each group to ``[-clip, clip]`` before the
parameters are computed (AWQ's clip search result).
"""

from __future__ import annotations

import torch

from harness.quantized import QuantizedWeight

_EPS = 1e-8


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight [N, K], got shape {tuple(w.shape)}")
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
    return w.reshape(n, k // group_size, group_size)


def qparams(
    wmin: torch.Tensor, wmax: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) as float tensors from per-group min / max (any matching shape)."""
    maxq = 2**bits - 1
    wmin = torch.minimum(wmin.float(), torch.zeros_like(wmin, dtype=torch.float32))
    wmax = torch.maximum(wmax.float(), torch.zeros_like(wmax, dtype=torch.float32))
    if symmetric:
        half = 2 ** (bits - 1)
        amax = torch.maximum(wmax, -wmin)
        scale = (amax / half).clamp(min=_EPS)
        zero = torch.full_like(scale, float(half))
    else:
        scale = ((wmax - wmin) / maxq).clamp(min=_EPS)
        zero = (-torch.round(wmin / scale)).clamp(0, maxq)
    return scale, zero


def group_minmax(
    w: torch.Tensor, group_size: int, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (min, max) of ``w`` [N, K] -> two [N, K/G] tensors, after clipping."""
    g = _grouped(w.float(), group_size)
    if clip is not None:
        c = clip.float().unsqueeze(-1)
        g = torch.maximum(torch.minimum(g, c), -c)
    return g.amin(-1), g.amax(-1)


def codes_from(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """Float codes in 0..2^b-1 of ``w`` [N, K] given per-group ``scale``/``zero`` [N, K/G]."""
    maxq = 2**bits - 1
    g = _grouped(w.float(), group_size)
    q = torch.round(g / scale.unsqueeze(-1)) + zero.unsqueeze(-1)
    return q.clamp(0, maxq).reshape(w.shape)


def dequant(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    g = _grouped(codes.float(), group_size)
    return ((g - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(codes.shape)


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool = False,
    clip: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> QuantizedWeight:
    """Round-to-nearest group quantization of ``w`` [N out, K in] (fp32 math)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits {bits} out of range 2..8")
    w = w.detach().float()
    if not torch.isfinite(w).all():
        raise ValueError("weight holds NaN or inf")
    wmin, wmax = group_minmax(w, group_size, clip)
    scale, zero = qparams(wmin, wmax, bits, symmetric)
    codes = codes_from(w, scale, zero, bits, group_size)
    return QuantizedWeight(
        codes=codes.to(torch.uint8).cpu(),
        scales=scale.float().cpu(),
        zeros=zero.to(torch.uint8).cpu(),
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        bias=None if bias is None else bias.detach().float().cpu().clone(),
    )


def fake_quantize(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool = False,
    clip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quantize-dequantize ``w`` (same shape, device and dtype; fp32 math inside)."""
    wf = w.detach().float()
    wmin, wmax = group_minmax(wf, group_size, clip)
    scale, zero = qparams(wmin, wmax, bits, symmetric)
    codes = codes_from(wf, scale, zero, bits, group_size)
    return dequant(codes, scale, zero, group_size).to(w.dtype)
