"""GPTQ v1 checkpoints (gptqmodel / optimum, vLLM ``gptq``): 2, 3, 4 or 8 bit, no act-order.

Per quantized Linear (``K`` in, ``N`` out, group ``G``, ``b`` bits):

* ``qweight`` int32 ``[K*b/32, N]``: the codes packed along K in order, as a dense
  little-endian bit stream per column (4 bit: nibble ``i`` of word ``r`` is row
  ``8r + i``; 3 bit: 32 rows in 3 words, values straddling word boundaries);
* ``qzeros`` int32 ``[K/G, N*b/32]``: ``zero - 1`` (mod ``2^b``), packed along N the
  same way (v1 loaders add the 1 back);
* ``scales`` fp16 ``[K/G, N]``; ``g_idx`` int32 ``[K]`` = ``k // G`` (``desc_act`` false).

Config: ``quant_method gptq, bits, group_size, sym, desc_act false,
checkpoint_format gptq`` and ``dynamic`` with one negative entry
``"-:<regex>": {}`` per unquantized module / part (gptqmodel and vLLM skip the
modules those regexes match). ``sym`` requires every zero point to be ``2^(b-1)``.

The v1 ``zero - 1`` storage cannot hold a zero point of 0: it is written as
``2^b - 1``, which v1 kernels turn into ``2^b`` instead of 0. An asymmetric model
with a zero point of 0 is therefore refused unless the option
``gptq_allow_zero_wrap=True`` is given (the reader here wraps it back exactly).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from harness.quantized import QuantizedWeight, pack_bits, unpack_bits
from harness.quantizers.formats.base import (
    CheckpointError,
    FormatWriter,
    Scheme,
    WriteContext,
    read_config,
    read_harness_meta,
    read_tensors,
)

NAME = "gptq"
SUPPORTED_BITS = (2, 3, 4, 8)
OPTIONS = ("gptq_allow_zero_wrap",)


def check(scheme: Scheme, weights: dict[str, QuantizedWeight], options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CheckpointError(f"format 'gptq' options are {OPTIONS}, got {unknown}")
    bits = scheme.bits
    if bits not in SUPPORTED_BITS:
        raise CheckpointError(
            f"format 'gptq' (GPTQ v1) stores {SUPPORTED_BITS}-bit weights, got bits={bits}"
        )
    unit = 32 if bits == 3 else 32 // bits  # values per whole number of int32 words
    for name, qw in weights.items():
        n, k = qw.shape
        if k % unit or n % unit:
            raise CheckpointError(
                f"format 'gptq' {bits} bit: {name} shape (N={n}, K={k}) must have N and K "
                f"multiples of {unit}"
            )
        if scheme.symmetric and bool((qw.zeros != 2 ** (bits - 1)).any()):
            raise CheckpointError(
                f"format 'gptq' sym=true: {name} has zero points other than {2 ** (bits - 1)}"
            )
        if not options.get("gptq_allow_zero_wrap") and bool((qw.zeros == 0).any()):
            raise CheckpointError(
                f"format 'gptq' (v1 stores zero - 1): {name} has zero points of 0, which v1 "
                "loaders read back as 2^bits; write 'awq' or 'compressed-tensors' instead, or "
                "pass gptq_allow_zero_wrap=True"
            )


def pack(name: str, qw: QuantizedWeight, scale_dtype: torch.dtype, options) -> dict:
    bits, group = qw.bits, qw.group_size
    _n, k = qw.shape
    zeros_m1 = (qw.zeros.to(torch.int64) - 1) % (2**bits)
    return {
        "qweight": pack_bits(qw.codes.t(), bits, dim=0),
        "qzeros": pack_bits(zeros_m1.t(), bits, dim=1),
        "scales": qw.scales.t().contiguous().to(scale_dtype),
        "g_idx": (torch.arange(k, dtype=torch.int32) // group).to(torch.int32),
    }


def _skip_regex(name: str) -> str:
    return "-:" + re.escape(name) + r"(\.|$)"


def config(ctx: WriteContext) -> dict[str, Any]:
    return {
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "bits": ctx.scheme.bits,
        "group_size": ctx.scheme.group_size,
        "sym": ctx.scheme.symmetric,
        "desc_act": False,
        "true_sequential": True,
        "dynamic": {_skip_regex(p): {} for p in ctx.unquantized_prefixes()},
    }


def read_gptq(folder: str | Path) -> dict[str, QuantizedWeight]:
    """A written GPTQ v1 folder -> ``{module: QuantizedWeight}`` (fp32 scales from fp16)."""
    qc = read_config(folder)["quantization_config"]
    if qc.get("quant_method") != "gptq":
        raise ValueError(f"{folder}: not a GPTQ checkpoint ({qc})")
    if qc.get("desc_act"):
        raise ValueError(f"{folder}: desc_act (act-order) GPTQ checkpoints are not supported")
    fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
    if fmt != "gptq":
        raise ValueError(f"{folder}: GPTQ checkpoint_format {fmt!r} is not v1 'gptq'")
    bits, group = int(qc["bits"]), int(qc["group_size"])
    symmetric = bool(qc.get("sym", read_harness_meta(folder).get("scheme", {}).get("symmetric")))
    tensors = read_tensors(folder)
    out = {}
    for key in sorted(tensors):
        if not key.endswith(".qweight"):
            continue
        m = key.removesuffix(".qweight")
        qweight = tensors[key]
        n = int(qweight.shape[1])
        k = int(qweight.shape[0]) * 32 // bits
        g_idx = tensors.get(f"{m}.g_idx")
        if g_idx is not None:
            k = int(g_idx.numel())
            if not torch.equal(g_idx.to(torch.int64), torch.arange(k) // group):
                raise ValueError(f"{folder}: {m}.g_idx is not k // group_size")
        codes = unpack_bits(qweight, bits, k, dim=0).t().contiguous()
        zeros_m1 = unpack_bits(tensors[f"{m}.qzeros"], bits, n, dim=1).to(torch.int64)
        zeros = ((zeros_m1 + 1) % (2**bits)).to(torch.uint8).t().contiguous()
        out[m] = QuantizedWeight(
            codes=codes,
            scales=tensors[f"{m}.scales"].t().contiguous().to(torch.float32),
            zeros=zeros,
            bits=bits,
            group_size=group,
            symmetric=symmetric,
            bias=tensors.get(f"{m}.bias"),
        )
    return out


WRITER = FormatWriter(name=NAME, check=check, pack=pack, config=config, read=read_gptq)
