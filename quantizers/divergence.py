"""How far a quant recipe moves a model's answers: KL divergence from full precision.

Accuracy on a few hundred documents moves by a point or two under W3/W4, within
its noise. This measures the change itself, as Dutta et al. (2024, "Accuracy is
not all you need") recommend next to flips: for each document it takes the
next-token distribution at the first answer position of the full-precision
model and of each quantized model (the recipe's dequantized weights written
into the same model, which is then put back), through the adapter, and
reports per recipe

* ``KL``: mean / median / 95th percentile of KL(P_full || P_quant) in nats,
* ``agree``: share of documents whose greedy first token is unchanged,
* ``vs_rtn``: the recipe's mean KL over RTN's at the same bits and group size.

:func:`channel_unevenness` says, for every Linear of the language model, how
uneven its input channels are (max / median of the per-channel mean ``|x|``):
AWQ protects the few channels with large activations, so it can only gain
where a few channels stand far above the rest. ``benchmarks/quant_divergence.py``
is the command line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.api.requests import Request
from harness.quantizers.apply import apply_fake_quant
from harness.quantizers.recipe import parse_recipe
from harness.quantizers.runtime import compute_quantization

log = logging.getLogger("harness.quantizers")


def first_token_logprobs(
    adapter: Any, requests: Sequence[Request], batch_size: int = 8
) -> torch.Tensor:
    """[documents, vocab] log-probabilities of the first answer token (fp32), through the
    adapter (its template, preprocessing and batching), as generation would see them."""
    rows = [
        adapter.next_token_logprobs(requests[i : i + batch_size])
        for i in range(0, len(requests), batch_size)
    ]
    return torch.cat(rows)


@torch.no_grad()
def channel_unevenness(adapter: Any, requests: Sequence[Request]) -> dict[str, float]:
    """Per Linear of the language model: max / median of the mean |input| per channel."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(_module: Any, args: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).abs()
            sums[name] = sums.get(name, 0) + x.sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    model = adapter.model
    language = model.model.language_model
    handles = [
        module.register_forward_hook(hook(name))
        for name, module in language.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        for request in requests:
            adapter.next_token_logprobs([request])
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name, total in sums.items():
        mean = total / counts[name]
        out[name] = float(mean.max() / mean.median().clamp_min(1e-12))
    return out


def kl_divergence(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per-row KL(P_ref || P_other) of two [rows, vocab] log-probability tensors, in nats."""
    return (ref.exp() * (ref - other)).sum(-1).clamp_min(0.0)


@dataclass(frozen=True)
class Divergence:
    recipe: str
    kl_mean: float
    kl_median: float
    kl_p95: float
    agree: float  # % of documents whose greedy first token is unchanged
    vs_rtn: float  # kl_mean / RTN's at the same bits and group size (NaN before an RTN row)


def divergence_rows(
    adapter: Any,
    requests: Sequence[Request],
    recipes: Sequence[str],
    *,
    calib_tasks: tuple[str, ...] = (),
    data_root: Path | None = None,
    cache_dir: str | Path | None = None,
) -> list[Divergence]:
    """KL from the adapter's own model for each recipe; the model is left as it was."""
    base = adapter.model
    ref = first_token_logprobs(adapter, requests)
    greedy = ref.argmax(-1)
    # the full-precision weights, put back after each recipe (no second copy on the device)
    original = {k: v.detach().to("cpu", copy=True) for k, v in base.state_dict().items()}
    rows: list[Divergence] = []
    rtn_mean: dict[tuple[int, int], float] = {}
    for name in recipes:
        start = time.perf_counter()
        recipe = parse_recipe(name)
        qmodel = compute_quantization(
            adapter,
            name,
            calib_tasks=calib_tasks if recipe.needs_calibration else (),
            data_root=data_root,
            cache_dir=cache_dir,
        )
        try:
            apply_fake_quant(base, qmodel)
            logp = first_token_logprobs(adapter, requests)
        finally:
            base.load_state_dict(original)
        kl = kl_divergence(ref, logp)
        key = (recipe.bits, recipe.group_size)
        mean = float(kl.mean())
        if recipe.method == "rtn":
            rtn_mean[key] = mean
        rows.append(
            Divergence(
                name,
                mean,
                float(kl.median()),
                float(kl.quantile(0.95)),
                100 * float((logp.argmax(-1) == greedy).float().mean()),
                mean / rtn_mean[key] if key in rtn_mean else float("nan"),
            )
        )
        log.info(f"{name}: {time.perf_counter() - start:.0f}s")
    return rows
