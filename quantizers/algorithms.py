"""The registry of layer-wise quantization algorithms: one signature, one result type.

``ALGORITHMS[method]`` is an :class:`Algorithm`; its ``quantize_layer(layer,
targets, inputs, recipe)`` returns a :class:`~harness.quantizers.layer.LayerResult`.
``propagates_quantized`` says which outputs the next layer is calibrated on:
the quantized layer's (GPTQ, AutoRound: errors are compensated downstream) or
the full-precision one's (AWQ, as llm-awq's ``run_awq`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from harness.quantizers import awq, gptq, rtn, signround
from harness.quantizers.layer import LayerInputs, LayerResult


@dataclass(frozen=True)
class Algorithm:
    name: str
    quantize_layer: Callable[[nn.Module, Sequence[str], LayerInputs, Any], LayerResult]
    needs_calibration: bool = True
    propagates_quantized: bool = False


ALGORITHMS: dict[str, Algorithm] = {
    "rtn": Algorithm("rtn", rtn.rtn_layer, needs_calibration=False),
    "awq": Algorithm("awq", awq.awq_layer),
    "gptq": Algorithm("gptq", gptq.gptq_layer, propagates_quantized=True),
    "autoround": Algorithm("autoround", signround.signround_layer, propagates_quantized=True),
}
