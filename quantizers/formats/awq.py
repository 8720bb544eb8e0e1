"""AWQ GEMM checkpoints (AutoAWQ / vLLM ``awq`` / transformers ``AwqConfig``), 4 bit only.

Per quantized Linear (``K`` in, ``N`` out, group ``G``): ``qweight`` int32 ``[K, N/8]``,
``qzeros`` int32 ``[K/G, N/8]`` (raw unsigned zeros), ``scales`` fp16 ``[K/G, N]``,
packed along N in AWQ's nibble order (``harness.kernels.awq_layout``). Config:
``{"quant_method": "awq", "bits": 4, "group_size": G, "zero_point": true,
"version": "gemm", "modules_to_not_convert": [...]}`` where the list names the kept
parts (vision tower, projector, lm_head) by module name and any other unquantized
Linear by its full name. A symmetric recipe is stored with its fixed zero point
``8`` (``zero_point`` stays true: the format has no symmetric variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.kernels.awq_layout import BITS, PACK, pack_awq, unpack_awq
from harness.quantized import QuantizedWeight
from harness.quantizers.formats.base import (
    CheckpointError,
    FormatWriter,
    Scheme,
    WriteContext,
    read_config,
    read_harness_meta,
    read_tensors,
)

NAME = "awq"


def check(scheme: Scheme, weights: dict[str, QuantizedWeight], options: dict[str, Any]) -> None:
    if scheme.bits != BITS:
        raise CheckpointError(
            f"format 'awq' (AWQ GEMM) stores {BITS}-bit weights only, got bits={scheme.bits}; "
            "use 'gptq' or 'compressed-tensors' for other widths"
        )
    for name, qw in weights.items():
        n, _k = qw.shape
        if n % PACK:
            raise CheckpointError(
                f"format 'awq': {name} has out_features {n}, not a multiple of {PACK}"
            )
    if options:
        raise CheckpointError(f"format 'awq' takes no options, got {sorted(options)}")


def pack(name: str, qw: QuantizedWeight, scale_dtype: torch.dtype, options) -> dict:
    packed = pack_awq(qw, scales_dtype=scale_dtype)
    return {"qweight": packed.qweight, "qzeros": packed.qzeros, "scales": packed.scales}


def config(ctx: WriteContext) -> dict[str, Any]:
    return {
        "quant_method": "awq",
        "bits": ctx.scheme.bits,
        "group_size": ctx.scheme.group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": ctx.unquantized_prefixes(),
    }


def read_awq(folder: str | Path) -> dict[str, QuantizedWeight]:
    """A written AWQ GEMM folder -> ``{module: QuantizedWeight}`` (fp32 scales from fp16)."""
    qc = read_config(folder)["quantization_config"]
    if qc.get("quant_method") != "awq" or str(qc.get("version", "gemm")).lower() != "gemm":
        raise ValueError(f"{folder}: not an AWQ GEMM checkpoint ({qc})")
    if int(qc.get("bits", BITS)) != BITS:
        raise ValueError(f"{folder}: AWQ GEMM with bits={qc.get('bits')} is not supported")
    group = int(qc["group_size"])
    symmetric = bool(read_harness_meta(folder).get("scheme", {}).get("symmetric", False))
    tensors = read_tensors(folder)
    out = {}
    for key in sorted(tensors):
        if not key.endswith(".qweight"):
            continue
        m = key.removesuffix(".qweight")
        out[m] = unpack_awq(
            tensors[key],
            tensors[f"{m}.qzeros"],
            tensors[f"{m}.scales"],
            group,
            bias=tensors.get(f"{m}.bias"),
            symmetric=symmetric,
        )
    return out


WRITER = FormatWriter(name=NAME, check=check, pack=pack, config=config, read=read_awq)
