"""The one canonical form every quantization algorithm produces, and dense bit packing.

A leaf module (it imports only torch): quantization algorithms produce these
types, and checkpoint formats (AWQ / GPTQ / compressed-tensors) and kernels
(Triton W4A16, torch fallback) consume only them: unsigned integer codes,
per-group scales and zero points, and which modules were quantized.
Dequantization is ``w[n, k] = (codes[n, k] - zeros[n, k // G]) * scales[n, k // G]``
for every algorithm; a symmetric quantizer stores its zero point as
``2^(bits-1)``. :func:`pack_bits` / :func:`unpack_bits` are the dense
little-endian bit streams the GPTQ and compressed-tensors layouts use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class QuantizedWeight:
    """One Linear layer's weight ``[N out, K in]`` in grouped integer form."""

    codes: torch.Tensor  # uint8 [N, K], values in 0 .. 2^bits - 1
    scales: torch.Tensor  # float32 [N, K // group_size]
    zeros: torch.Tensor  # uint8 [N, K // group_size], values in 0 .. 2^bits - 1
    bits: int
    group_size: int
    symmetric: bool = False
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, k = self.codes.shape
        if k % self.group_size:
            raise ValueError(f"in_features {k} is not a multiple of group size {self.group_size}")
        groups = k // self.group_size
        if tuple(self.scales.shape) != (n, groups) or tuple(self.zeros.shape) != (n, groups):
            raise ValueError(
                f"scales {tuple(self.scales.shape)} / zeros {tuple(self.zeros.shape)} "
                f"do not match codes {tuple(self.codes.shape)} at group size {self.group_size}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g = self.group_size
        codes = self.codes.to(torch.float32)
        zeros = self.zeros.to(torch.float32).repeat_interleave(g, dim=1)
        scales = self.scales.to(torch.float32).repeat_interleave(g, dim=1)
        return ((codes - zeros) * scales).to(dtype)


@dataclass
class QuantizedModel:
    """Every quantized Linear of a model by its full module name, plus the recipe."""

    weights: dict[str, QuantizedWeight]
    recipe: dict[str, Any]
    not_quantized: list[str] = field(default_factory=list)  # Linear modules kept in 16 bit
    stats: dict[str, Any] = field(default_factory=dict)  # per-layer errors, timings, tokens


# -- dense bit-stream packing (GPTQ along K / N, compressed-tensors along K / N) ---------------


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit values held in int64 -> int32 with the same bits (two's complement)."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_bits(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack unsigned ``bits``-bit integers of a 2-D tensor along ``dim`` into int32 words.

    A dense little-endian bit stream: element ``i`` along ``dim`` occupies bits
    ``i*bits .. i*bits+bits-1`` of the stream, word ``w`` holding stream bits
    ``32w .. 32w+31`` (so with 4 bits, nibble ``j`` of word ``c`` is element ``8c + j``;
    with 3 bits, elements straddle word boundaries as in GPTQ's 3-bit layout). The
    length along ``dim`` becomes ``ceil(length * bits / 32)`` (zero padded).
    """
    if values.dim() != 2 or dim not in (0, 1):
        raise ValueError(f"expected a 2-D tensor and dim 0 or 1, got {tuple(values.shape)}, {dim}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 2**bits):
        raise ValueError(
            f"values must lie in 0..{2**bits - 1}, got [{int(v.min())}, {int(v.max())}]"
        )
    if dim == 0:
        v = v.t()
    rows, cols = v.shape
    words = -(-cols * bits // 32)
    padded = -(-cols // 32) * 32
    if padded > cols:
        v = torch.nn.functional.pad(v, (0, padded - cols))
    v = v.reshape(rows, padded // 32, 32)
    out = torch.zeros(rows, padded // 32, bits, dtype=torch.int64)
    for i in range(32):
        start = i * bits
        w, off = divmod(start, 32)
        out[:, :, w] |= (v[:, :, i] << off) & 0xFFFFFFFF
        if off + bits > 32:
            out[:, :, w + 1] |= v[:, :, i] >> (32 - off)
    packed = _to_int32(out.reshape(rows, -1)[:, :words])
    return packed.t().contiguous() if dim == 0 else packed.contiguous()


def unpack_bits(packed: torch.Tensor, bits: int, length: int, dim: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: int32 words -> uint8 values, ``length`` along ``dim``."""
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise TypeError(f"expected a 2-D int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    w = packed.to(torch.int64) & 0xFFFFFFFF
    if dim == 0:
        w = w.t()
    rows, nwords = w.shape
    if nwords != -(-length * bits // 32):
        raise ValueError(
            f"{nwords} packed words along dim {dim} do not hold {length} {bits}-bit values"
        )
    groups = -(-length // 32)
    w = torch.nn.functional.pad(w, (0, groups * bits - nwords)).reshape(rows, groups, bits)
    out = torch.zeros(rows, groups, 32, dtype=torch.int64)
    mask = 2**bits - 1
    for i in range(32):
        start = i * bits
        word, off = divmod(start, 32)
        val = w[:, :, word] >> off
        if off + bits > 32:
            val = val | (w[:, :, word + 1] << (32 - off))
        out[:, :, i] = val & mask
    values = out.reshape(rows, groups * 32)[:, :length].to(torch.uint8)
    return values.t().contiguous() if dim == 0 else values.contiguous()
