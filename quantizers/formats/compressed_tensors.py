"""compressed-tensors ``pack-quantized`` checkpoints (llm-compressor, vLLM, transformers).

Per quantized Linear (``K`` in, ``N`` out, group ``G``, ``b`` = 4 or 8 bits):

* ``weight_packed`` int32 ``[N, ceil(K*b/32)]``: packed along K, element ``i`` at
  stream bits ``i*b ..`` (4 bit: nibble ``j`` of word ``c`` is column ``8c + j``;
  8 bit: byte ``j`` of word ``c`` is column ``4c + j``);
* ``weight_scale`` ``[N, K/G]`` (fp16 by default; bf16 / fp32 on request);
* ``weight_zero_point`` int32 ``[ceil(N*b/32), K/G]``, packed along N (asymmetric only);
* ``weight_shape`` int64 ``[2]`` = ``(N, K)`` (the dtype the library itself writes).

The library holds codes and zero points as signed integers ``q_s`` in
``[-2^(b-1), 2^(b-1) - 1]`` and packs ``q_s + 2^(b-1)``; it dequantizes
``(q_s - z_s) * scale`` (``z_s`` = 0 when symmetric). With ``q_s = code - 2^(b-1)``
and ``z_s = zero - 2^(b-1)`` that is exactly ``(code - zero) * scale`` of
:class:`QuantizedWeight`, and the stored fields are our unsigned codes / zeros as they
are. A symmetric scheme needs every zero point at ``2^(b-1)`` (checked).

Config: ``quant_method compressed-tensors, format pack-quantized, quantization_status
compressed``, one ``config_groups.group_0`` targeting ``Linear`` with the weights'
``num_bits / type int / symmetric / strategy group / group_size / dynamic false``, and
``ignore`` = the full name of every unquantized Linear.
"""

from __future__ import annotations

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
    read_tensors,
)

NAME = "compressed-tensors"
SUPPORTED_BITS = (4, 8)


def check(scheme: Scheme, weights: dict[str, QuantizedWeight], options: dict[str, Any]) -> None:
    if options:
        raise CheckpointError(
            f"format 'compressed-tensors' takes no options, got {sorted(options)}"
        )
    if scheme.bits not in SUPPORTED_BITS:
        raise CheckpointError(
            f"format 'compressed-tensors' (pack-quantized) is written for {SUPPORTED_BITS}-bit "
            f"weights, got bits={scheme.bits}"
        )
    if scheme.symmetric:
        mid = 2 ** (scheme.bits - 1)
        for name, qw in weights.items():
            if bool((qw.zeros != mid).any()):
                raise CheckpointError(
                    f"format 'compressed-tensors' symmetric: {name} has zero points other "
                    f"than {mid}"
                )


def pack(name: str, qw: QuantizedWeight, scale_dtype: torch.dtype, options) -> dict:
    n, k = qw.shape
    out = {
        "weight_packed": pack_bits(qw.codes, qw.bits, dim=1),
        "weight_scale": qw.scales.to(scale_dtype).contiguous(),
        "weight_shape": torch.tensor([n, k], dtype=torch.int64),
    }
    if not qw.symmetric:
        out["weight_zero_point"] = pack_bits(qw.zeros, qw.bits, dim=0)
    return out


def config(ctx: WriteContext) -> dict[str, Any]:
    weights = {
        "num_bits": ctx.scheme.bits,
        "type": "int",
        "symmetric": ctx.scheme.symmetric,
        "strategy": "group",
        "group_size": ctx.scheme.group_size,
        "dynamic": False,
        "actorder": None,
        "block_structure": None,
        "observer": "minmax",
        "observer_kwargs": {},
    }
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": None,
                "output_activations": None,
                "format": "pack-quantized",
            }
        },
        "ignore": list(ctx.unquantized),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
    }


def read_compressed_tensors(folder: str | Path) -> dict[str, QuantizedWeight]:
    """A written pack-quantized folder -> ``{module: QuantizedWeight}`` (fp32 scales)."""
    qc = read_config(folder)["quantization_config"]
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") != "pack-quantized":
        raise ValueError(f"{folder}: not a compressed-tensors pack-quantized checkpoint")
    groups = list(qc["config_groups"].values())
    if len(groups) != 1:
        raise ValueError(f"{folder}: expected one config group, got {len(groups)}")
    w = groups[0]["weights"]
    if w.get("strategy") != "group" or w.get("type") != "int":
        raise ValueError(f"{folder}: only int group-strategy weights are supported ({w})")
    bits, group, symmetric = int(w["num_bits"]), int(w["group_size"]), bool(w["symmetric"])
    tensors = read_tensors(folder)
    out = {}
    for key in sorted(tensors):
        if not key.endswith(".weight_packed"):
            continue
        m = key.removesuffix(".weight_packed")
        n, k = (int(v) for v in tensors[f"{m}.weight_shape"].tolist())
        codes = unpack_bits(tensors[key], bits, k, dim=1)
        scales = tensors[f"{m}.weight_scale"].to(torch.float32)
        if symmetric:
            zeros = torch.full(tuple(scales.shape), 2 ** (bits - 1), dtype=torch.uint8)
        else:
            zeros = unpack_bits(tensors[f"{m}.weight_zero_point"], bits, n, dim=0)
        out[m] = QuantizedWeight(
            codes=codes,
            scales=scales.contiguous(),
            zeros=zeros,
            bits=bits,
            group_size=group,
            symmetric=symmetric,
            bias=tensors.get(f"{m}.bias"),
        )
    return out


WRITER = FormatWriter(
    name=NAME,
    check=check,
    pack=pack,
    config=config,
    read=read_compressed_tensors,
    scale_dtype=None,
    scale_dtypes=(torch.float16, torch.bfloat16, torch.float32),
)
