"""What every on-disk checkpoint format shares: the writer interface and file readers.

A format (``awq``, ``gptq``, ``compressed-tensors``) is a :class:`FormatWriter`;
:mod:`harness.quantizers.checkpoint` builds the state dict and folder around it.
The formats import this module and :mod:`harness.quantized`, never the writer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import QuantizationError
from harness.quantized import QuantizedModel, QuantizedWeight

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
HARNESS_META = "harness_quant.json"
META_VERSION = 1


class CheckpointError(QuantizationError):
    """The quantized model cannot be written in the requested format."""


@dataclass(frozen=True)
class Scheme:
    """What every quantized layer shares: the formats' configs describe one scheme."""

    bits: int
    group_size: int
    symmetric: bool


@dataclass
class WriteContext:
    """Everything a format needs to build its ``quantization_config``."""

    model: nn.Module
    qmodel: QuantizedModel
    scheme: Scheme
    quantized: list[str]  # full names of the quantized Linear layers
    unquantized: list[str]  # full names of every other nn.Linear
    options: dict[str, Any] = field(default_factory=dict)

    def unquantized_prefixes(self) -> list[str]:
        """The unquantized Linear layers, collapsed to part names where a whole part is kept.

        A vision tower, projector or lm_head none of whose Linear layers is quantized is
        listed by its module name (``model.vision_tower``); other unquantized Linear
        layers (e.g. one skipped inside a decoder layer) by their full name.
        """
        from harness.quantizers.modules import find_parts

        try:
            parts = find_parts(self.model)
            candidates = [*parts.vision_towers, *parts.projectors]
            if parts.lm_head:
                candidates.append(parts.lm_head)
        except Exception:  # noqa: BLE001 - an unknown tree: fall back to full names
            candidates = []
        quantized = set(self.quantized)
        out: list[str] = []
        covered: set[str] = set()
        for prefix in candidates:
            inside = [n for n in self.unquantized if _under(n, prefix)]
            if inside and not any(_under(q, prefix) for q in quantized):
                out.append(prefix)
                covered.update(inside)
        out += [n for n in self.unquantized if n not in covered]
        return out


@dataclass(frozen=True)
class FormatWriter:
    """One on-disk format: how to check, pack, describe and read back quantized layers."""

    name: str
    # Raise CheckpointError when the scheme / a layer cannot be stored.
    check: Callable[[Scheme, dict[str, QuantizedWeight], dict[str, Any]], None]
    # (module name, weight, scale dtype, options) -> {tensor name suffix: tensor}
    pack: Callable[[str, QuantizedWeight, torch.dtype, dict[str, Any]], dict[str, torch.Tensor]]
    config: Callable[[WriteContext], dict[str, Any]]
    read: Callable[[str | Path], dict[str, QuantizedWeight]]
    # None: the model's 16-bit dtype (fp16 for an fp32 model); else fixed by the format.
    scale_dtype: torch.dtype | None = torch.float16
    scale_dtypes: tuple[torch.dtype, ...] = (torch.float16,)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# -- reading back (for round-trip tests and re-use) ------------------------------------------


def read_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / CONFIG_NAME).read_text())


def read_harness_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / HARNESS_META
    return json.loads(path.read_text()) if path.is_file() else {}


def read_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / WEIGHTS_NAME))
