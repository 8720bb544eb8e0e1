"""What a layer-wise quantization algorithm is given and what it returns.

Every algorithm (:mod:`harness.quantizers.algorithms`) quantizes one decoder
layer at a time from the same :class:`LayerInputs` and returns one
:class:`LayerResult`, so the driver (:func:`harness.quantizers.apply.quantize_model`)
runs them all the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.quantized import QuantizedWeight


@dataclass
class LayerInputs:
    """One decoder layer's calibration activations, batch by batch."""

    fp_inputs: Sequence[torch.Tensor]  # inputs from the full-precision model
    q_inputs: Sequence[torch.Tensor]  # inputs from the model quantized so far
    fp_outputs: Sequence[torch.Tensor]  # the full-precision layer's outputs on fp_inputs
    kwargs: Sequence[dict[str, Any]]  # attention masks, positions ... per batch


@dataclass
class LayerResult:
    """An algorithm's result for one layer."""

    weights: dict[str, QuantizedWeight]  # by name relative to the layer
    # parameters changed outside the quantized Linear layers (AWQ's folded norms)
    modified: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
