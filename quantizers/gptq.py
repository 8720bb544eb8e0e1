"""GPTQ: Hessian-aware column-by-column quantization with error feedback (act_order off).

For each Linear: ``H = 2/n * sum X^T X`` over its calibration inputs (fp32), dead
columns (zero diagonal) get ``H_jj = 1`` and ``W[:, j] = 0``, damping ``damp * mean(diag H)``
on the diagonal, ``Hinv = cholesky(cholesky_inverse(cholesky(H)), upper=True)``. Columns
are processed in blocks of ``block_size``: a group's scale/zero are computed from the
current (error-updated) weights when its first column is reached, each column is
quantized and its error ``(w - q) / Hinv_jj`` is spread over the remaining columns of the
block; after the block, over all later columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness.errors import QuantizationError
from harness.quantized import QuantizedWeight
from harness.quantizers.group_quant import qparams
from harness.quantizers.layer import LayerInputs, LayerResult


class HessianAccumulator:
    """Running ``2/n * sum x x^T`` over the rows of the inputs seen (fp32)."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.H = torch.zeros(k, k, dtype=torch.float32, device=device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1, x.shape[-1])
        m = x.shape[0]
        if m == 0:
            return
        self.H *= self.n / (self.n + m)
        self.n += m
        x = x * (2.0 / self.n) ** 0.5
        self.H += x.t() @ x


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    H: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool = False,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    bias: torch.Tensor | None = None,
) -> QuantizedWeight:
    W = weight.detach().float().clone()
    n_out, k = W.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
    maxq = 2**bits - 1
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += torch.eye(k, device=H.device) * (damp * torch.mean(torch.diag(H)))
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except torch.linalg.LinAlgError as exc:
        raise QuantizationError(
            f"GPTQ: Hessian not positive definite ({exc}); raise the damping or use more "
            "calibration samples"
        ) from exc

    codes = torch.zeros(n_out, k, dtype=torch.float32, device=W.device)
    scales = torch.zeros(n_out, k // group_size, dtype=torch.float32, device=W.device)
    zeros = torch.zeros_like(scales)
    scale = zero = None
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:
                cur = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :group_size]
                scale, zero = qparams(cur.amin(1), cur.amax(1), bits, symmetric)
                scales[:, col // group_size] = scale
                zeros[:, col // group_size] = zero
            w = W1[:, i]
            q = (torch.round(w / scale) + zero).clamp(0, maxq)
            codes[:, col] = q
            deq = (q - zero) * scale
            d = Hinv1[i, i]
            err = (w - deq) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return QuantizedWeight(
        codes=codes.to(torch.uint8).cpu(),
        scales=scales.cpu(),
        zeros=zeros.to(torch.uint8).cpu(),
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        bias=None if bias is None else bias.detach().float().cpu().clone(),
    )


@torch.no_grad()
def gptq_layer(
    layer: nn.Module, targets: Sequence[str], inputs: LayerInputs, recipe
) -> LayerResult:
    """Accumulate each target Linear's Hessian from one pass of ``layer`` on the inputs of the
    model quantized so far (GPTQ's sequential order), then quantize."""
    hidden, kwargs_list = inputs.q_inputs, inputs.kwargs
    acc: dict[str, HessianAccumulator] = {}
    handles = []
    for n in targets:
        lin = layer.get_submodule(n)
        acc[n] = HessianAccumulator(lin.in_features, lin.weight.device)

        def pre(_m, args, n=n):
            acc[n].add(args[0])

        handles.append(lin.register_forward_pre_hook(pre))
    try:
        for h, kw in zip(hidden, kwargs_list, strict=True):
            layer(h, **kw)
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for n in targets:
        lin = layer.get_submodule(n)
        out[n] = gptq_quantize(
            lin.weight,
            acc[n].H,
            recipe.bits,
            recipe.group_size,
            recipe.symmetric,
            damp=recipe.damp,
            block_size=recipe.block_size,
            bias=lin.bias,
        )
    return LayerResult(out, info={"tokens": {n: a.n for n, a in acc.items()}})
