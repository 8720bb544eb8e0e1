"""Quantizers that wrap model adapters (RTN, AWQ, AutoRound, GPTQ).

Public API::

    from harness.quantizers import parse_recipe, quantize_model, apply_fake_quant
    qmodel = quantize_model(model, "awq-w4g128", tokenizer=tok, cache_dir="quant-cache")
    apply_fake_quant(model, qmodel)  # dequantized weights written back (CPU evaluation)
"""

if __name__ != "harness.quantizers":  # imported as the bare `quantizers` from a checkout's root
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

from harness.quantized import QuantizedModel, QuantizedWeight
from harness.quantizers.apply import (
    apply_fake_quant,
    load_quantized,
    model_fingerprint,
    quantize_model,
    save_quantized,
)
from harness.quantizers.calibration import CalibrationError, builtin_texts, text_calibration
from harness.quantizers.group_quant import fake_quantize, quantize_weight
from harness.quantizers.modules import find_parts, select_linears
from harness.quantizers.recipe import QuantRecipe, RecipeError, parse_recipe

__all__ = [
    "CalibrationError",
    "QuantRecipe",
    "QuantizedModel",
    "QuantizedWeight",
    "RecipeError",
    "apply_fake_quant",
    "builtin_texts",
    "fake_quantize",
    "find_parts",
    "load_quantized",
    "model_fingerprint",
    "parse_recipe",
    "quantize_model",
    "quantize_weight",
    "save_quantized",
    "select_linears",
    "text_calibration",
]
