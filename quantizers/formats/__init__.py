"""On-disk formats for quantized checkpoints other tools load (see the spec's "On-disk formats").

``WRITERS`` maps a format name to its :class:`~harness.quantizers.formats.base.FormatWriter`:

* ``awq``: AWQ GEMM (AutoAWQ, vLLM ``awq``, transformers ``AwqConfig``), 4 bit only;
* ``gptq``: GPTQ v1 (gptqmodel / optimum, vLLM ``gptq``), 2 / 3 / 4 / 8 bit;
* ``compressed-tensors``: ``pack-quantized`` (llm-compressor, vLLM, transformers), 4 / 8 bit.

``read_checkpoint(folder)`` turns a written folder back into ``{module: QuantizedWeight}``
by the ``quant_method`` in its ``config.json``.
"""

from __future__ import annotations

from pathlib import Path

from harness.quantized import QuantizedWeight
from harness.quantizers.formats import awq, compressed_tensors, gptq
from harness.quantizers.formats.base import FormatWriter, read_config

WRITERS: dict[str, FormatWriter] = {
    "awq": awq.WRITER,
    "gptq": gptq.WRITER,
    "compressed-tensors": compressed_tensors.WRITER,
}
ALIASES = {"compressed_tensors": "compressed-tensors", "ct": "compressed-tensors"}
QUANT_METHODS = {"awq": "awq", "gptq": "gptq", "compressed-tensors": "compressed-tensors"}


def get_writer(name: str) -> FormatWriter:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in WRITERS:
        raise ValueError(f"unknown checkpoint format {name!r}; known: {', '.join(WRITERS)}")
    return WRITERS[key]


def read_checkpoint(folder: str | Path) -> dict[str, QuantizedWeight]:
    method = (read_config(folder).get("quantization_config") or {}).get("quant_method")
    if method not in QUANT_METHODS:
        raise ValueError(f"{folder}: config.json has no known quantization_config ({method!r})")
    return WRITERS[QUANT_METHODS[method]].read(folder)


__all__ = ["WRITERS", "get_writer", "read_checkpoint"]
