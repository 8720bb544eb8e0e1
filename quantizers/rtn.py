"""Round-to-nearest: the group quantizer applied to each weight, no calibration."""

from __future__ import annotations

from torch import nn

from harness.quantized import QuantizedWeight
from harness.quantizers.group_quant import quantize_weight
from harness.quantizers.layer import LayerInputs, LayerResult


def rtn_linear(linear: nn.Linear, bits: int, group_size: int, symmetric: bool) -> QuantizedWeight:
    return quantize_weight(linear.weight, bits, group_size, symmetric, bias=linear.bias)


def rtn_layer(layer: nn.Module, targets, inputs: LayerInputs | None, recipe) -> LayerResult:
    """Quantize the Linear layers ``targets`` (names relative to ``layer``); no calibration."""
    return LayerResult(
        {
            name: rtn_linear(
                layer.get_submodule(name), recipe.bits, recipe.group_size, recipe.symmetric
            )
            for name in targets
        }
    )
