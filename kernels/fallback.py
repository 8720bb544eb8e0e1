"""Pure-torch W4A16 matmul on the AWQ GEMM layout (CPU and GPU, any float activations).

The reference the Triton kernels are checked against, and the path ``W4A16Linear``
takes wherever Triton cannot run (CPU, fp32 activations, unsupported shapes).
"""

from __future__ import annotations

import torch

from .awq_layout import AWQ_ORDER, BITS, PACK, check_awq_tensors


def _unpack_kn(packed: torch.Tensor) -> torch.Tensor:
    """int32 ``[R, N/8]`` -> int32 ``[R, N]`` codes (vectorised shifts, AWQ order)."""
    rows, words = packed.shape
    shifts = torch.tensor(
        [BITS * AWQ_ORDER.index(j) for j in range(PACK)], dtype=torch.int32, device=packed.device
    )
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).reshape(rows, words * PACK)


def dequantize_awq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dequantized weight ``W^T`` as ``[K, N]`` in ``dtype`` (computed in fp32)."""
    k, n = check_awq_tensors(qweight, qzeros, scales, group_size)
    groups = k // group_size
    q = _unpack_kn(qweight).to(torch.float32).reshape(groups, group_size, n)
    z = _unpack_kn(qzeros).to(torch.float32).unsqueeze(1)
    s = scales.to(torch.float32).unsqueeze(1)
    return ((q - z) * s).reshape(k, n).to(dtype)


def awq_matmul_torch(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x [..., K] @ W^T + bias`` -> ``[..., N]`` in ``x.dtype``.

    On CPU the product is computed in fp32 (exact-ish reference); on GPU in the
    activation dtype, as an fp16 Linear would.
    """
    k, n = check_awq_tensors(qweight, qzeros, scales, group_size, bias)
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects {k}")
    if not x.is_floating_point():
        raise TypeError(f"activations must be floating point, got {x.dtype}")
    compute = x.dtype if x.is_cuda else torch.float32
    w = dequantize_awq(qweight, qzeros, scales, group_size, dtype=compute)
    out = x.reshape(-1, k).to(compute) @ w
    if bias is not None:
        out = out + bias.to(compute)
    return out.to(x.dtype).reshape(*x.shape[:-1], n)
