"""The one canonical form every quantization algorithm produces.

Writers (AWQ / GPTQ / compressed-tensors checkpoints) and kernels (Triton
W4A16, torch fallback) consume only this: unsigned integer codes, per-group
scales and zero points, and which modules were quantized. Dequantization is
``w[n, k] = (codes[n, k] - zeros[n, k // G]) * scales[n, k // G]`` for every
algorithm; a symmetric quantizer stores its zero point as ``2^(bits-1)``.
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
