"""Pack / unpack between :class:`QuantizedWeight` and the AWQ GEMM layout (4 bit).

The AWQ GEMM format (AutoAWQ, vLLM ``awq``, transformers ``AwqConfig``) stores a
Linear layer with ``K`` inputs, ``N`` outputs and group size ``G`` as:

* ``qweight`` int32 ``[K, N/8]``: the codes of ``W^T``, eight 4-bit codes per word
  along N;
* ``qzeros``  int32 ``[K/G, N/8]``: the raw unsigned zero points (0..15), packed
  the same way;
* ``scales``  fp16  ``[K/G, N]``.

Within one word ``c``, nibble ``i`` (bits ``4i .. 4i+3``) holds column
``8c + AWQ_ORDER[i]`` with ``AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)``; equivalently
column ``8c + j`` sits in nibble ``AWQ_REVERSE_ORDER[j]``.

Codes and zero points round-trip bit-exactly. Scales are stored in fp16 as the
format requires, so they round-trip exactly when they are fp16-representable
(pass ``scales_dtype=torch.float32`` to :func:`pack_awq` to keep them in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.quantized import QuantizedWeight

BITS = 4
PACK = 32 // BITS  # codes per int32 word
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def nibble_of_column(j: int) -> int:
    """Nibble index holding column ``8c + j`` (the kernels compute it the same way)."""
    return (j >> 1) | ((j & 1) << 2)


assert tuple(nibble_of_column(j) for j in range(PACK)) == AWQ_REVERSE_ORDER
assert tuple(AWQ_ORDER[AWQ_REVERSE_ORDER[j]] for j in range(PACK)) == tuple(range(PACK))


@dataclass
class AWQPacked:
    """One Linear layer in the AWQ GEMM layout."""

    qweight: torch.Tensor  # int32 [K, N/8]
    qzeros: torch.Tensor  # int32 [K/G, N/8]
    scales: torch.Tensor  # fp16 [K/G, N]
    group_size: int
    bias: torch.Tensor | None = None  # [N]

    def __post_init__(self) -> None:
        check_awq_tensors(self.qweight, self.qzeros, self.scales, self.group_size, self.bias)

    @property
    def in_features(self) -> int:
        return int(self.qweight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.qweight.shape[1]) * PACK

    def to_quantized(self) -> QuantizedWeight:
        return unpack_awq(self.qweight, self.qzeros, self.scales, self.group_size, self.bias)


def check_awq_tensors(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> tuple[int, int]:
    """Validate shapes and dtypes of AWQ GEMM tensors; return ``(K, N)``."""
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise TypeError(f"qweight / qzeros must be int32, got {qweight.dtype} / {qzeros.dtype}")
    if qweight.dim() != 2 or qzeros.dim() != 2 or scales.dim() != 2:
        raise ValueError(
            f"qweight, qzeros and scales must be 2-D, got shapes {tuple(qweight.shape)}, "
            f"{tuple(qzeros.shape)}, {tuple(scales.shape)}"
        )
    if not scales.is_floating_point():
        raise TypeError(f"scales must be floating point, got {scales.dtype}")
    if group_size <= 0:
        raise ValueError(f"group size must be positive, got {group_size}")
    k, n_words = qweight.shape
    n = n_words * PACK
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
    groups = k // group_size
    if tuple(qzeros.shape) != (groups, n_words):
        raise ValueError(
            f"qzeros shape {tuple(qzeros.shape)} does not match qweight {tuple(qweight.shape)}: "
            f"expected {(groups, n_words)} at group size {group_size}"
        )
    if tuple(scales.shape) != (groups, n):
        raise ValueError(
            f"scales shape {tuple(scales.shape)} does not match qweight {tuple(qweight.shape)}: "
            f"expected {(groups, n)} at group size {group_size}"
        )
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias shape {tuple(bias.shape)} does not match out_features {n}")
    return k, n


def pack_columns(codes: torch.Tensor) -> torch.Tensor:
    """Pack ``[R, N]`` integer codes in 0..15 along N into int32 ``[R, N/8]`` (AWQ order)."""
    if codes.dim() != 2:
        raise ValueError(f"expected 2-D codes [R, N], got shape {tuple(codes.shape)}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    rows, n = codes.shape
    if n % PACK:
        raise ValueError(
            f"the AWQ layout packs {PACK} columns per int32 word along out_features; "
            f"out_features {n} is not a multiple of {PACK}"
        )
    wide = codes.to(torch.int64)
    if wide.numel() and (int(wide.min()) < 0 or int(wide.max()) > 2**BITS - 1):
        raise ValueError(
            f"codes must lie in 0..{2**BITS - 1}, got range [{int(wide.min())}, {int(wide.max())}]"
        )
    groups = wide.reshape(rows, n // PACK, PACK)
    word = torch.zeros(rows, n // PACK, dtype=torch.int64, device=codes.device)
    for nibble, column in enumerate(AWQ_ORDER):
        word |= groups[:, :, column] << (BITS * nibble)
    # Reinterpret the unsigned 32-bit value as int32 (two's complement) explicitly.
    word = torch.where(word >= 2**31, word - 2**32, word)
    return word.to(torch.int32)


def unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_columns`: int32 ``[R, N/8]`` -> uint8 ``[R, N]``."""
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise TypeError(
            f"expected a 2-D int32 packed tensor, got {packed.dtype} {tuple(packed.shape)}"
        )
    rows, words = packed.shape
    out = torch.empty(rows, words, PACK, dtype=torch.uint8, device=packed.device)
    for nibble, column in enumerate(AWQ_ORDER):
        # Arithmetic shift of a negative word only smears the sign above bit 31 - 4*nibble;
        # the mask keeps the four bits we want.
        out[:, :, column] = ((packed >> (BITS * nibble)) & 0xF).to(torch.uint8)
    return out.reshape(rows, words * PACK)


def pack_awq(
    qw: QuantizedWeight,
    scales_dtype: torch.dtype = torch.float16,
    bias: torch.Tensor | None = None,
) -> AWQPacked:
    """:class:`QuantizedWeight` ``[N, K]`` (4 bit) -> AWQ GEMM tensors.

    ``bias`` overrides ``qw.bias`` when given.
    """
    if qw.bits != BITS:
        raise ValueError(f"the AWQ GEMM layout holds {BITS}-bit codes, got bits={qw.bits}")
    n, k = qw.shape
    if n % PACK:
        raise ValueError(
            f"out_features {n} is not a multiple of {PACK} (the AWQ layout packs "
            f"{PACK} output columns per int32 word)"
        )
    qweight = pack_columns(qw.codes.t().contiguous())
    qzeros = pack_columns(qw.zeros.t().contiguous())
    scales = qw.scales.t().contiguous().to(scales_dtype)
    b = bias if bias is not None else qw.bias
    return AWQPacked(qweight, qzeros, scales, qw.group_size, b)


def unpack_awq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
    symmetric: bool = False,
) -> QuantizedWeight:
    """AWQ GEMM tensors -> :class:`QuantizedWeight` (codes / zeros bit-exact, fp32 scales)."""
    check_awq_tensors(qweight, qzeros, scales, group_size, bias)
    codes = unpack_columns(qweight).t().contiguous()
    zeros = unpack_columns(qzeros).t().contiguous()
    return QuantizedWeight(
        codes=codes,
        scales=scales.t().contiguous().to(torch.float32),
        zeros=zeros,
        bits=BITS,
        group_size=group_size,
        symmetric=symmetric,
        bias=bias,
    )
