"""Kernels: Triton INT4 matmuls with a pure-torch fallback.

Public API:

* AWQ GEMM layout: :func:`pack_awq`, :func:`unpack_awq`, :class:`AWQPacked`,
  :func:`pack_columns`, :func:`unpack_columns`, ``AWQ_ORDER``, ``AWQ_REVERSE_ORDER``;
* torch fallback: :func:`dequantize_awq`, :func:`awq_matmul_torch`;
* module: :class:`W4A16Linear`, :func:`rtn_quantize`, :func:`triton_available`;
* Triton kernels (importing triton lazily): ``harness.kernels.triton_w4a16.w4a16_matmul``.
"""

if __name__ == "harness.kernels":
    from .awq_layout import (
        AWQ_ORDER,
        AWQ_REVERSE_ORDER,
        AWQPacked,
        check_awq_tensors,
        pack_awq,
        pack_columns,
        unpack_awq,
        unpack_columns,
    )
    from .fallback import awq_matmul_torch, dequantize_awq
    from .linear import W4A16Linear, rtn_quantize, triton_available
else:  # imported as the bare `kernels` from a checkout's root: Hugging Face's package wins
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

__all__ = [
    "AWQ_ORDER",
    "AWQ_REVERSE_ORDER",
    "AWQPacked",
    "W4A16Linear",
    "awq_matmul_torch",
    "check_awq_tensors",
    "dequantize_awq",
    "pack_awq",
    "pack_columns",
    "rtn_quantize",
    "triton_available",
    "unpack_awq",
    "unpack_columns",
]
