"""SignRound (AutoRound): learned rounding offsets and range factors by signed gradient descent.

Per decoder layer, for each target Linear ``W`` [N, K]: a rounding offset ``V`` (shape of
``W``, init 0, kept in [-0.5, 0.5]) and per-group factors ``alpha`` / ``beta`` (init 1,
kept in [0, 1]) that shrink the group's max / min::

    wmax = alpha * max(W_g, 0);  wmin = beta * min(W_g, 0)
    scale = (wmax - wmin) / (2^b - 1);  zero = round_ste(-wmin / scale)
    w_hat = (clamp(round_ste(W / scale + V) + zero, 0, 2^b - 1) - zero) * scale

(symmetric: ``scale = alpha * max|W_g| / 2^(b-1)``). The loss is the MSE between the
layer run with ``w_hat`` on inputs from the already-quantized previous layers and the
full-precision layer on full-precision inputs. Each step ``p -= lr_t * sign(grad)`` with
``lr_t = lr * (1 - t / iters)``, ``lr = 1 / iters`` by default; one calibration batch per
step. The best iterate is kept, and it is checked against the starting point (plain
RTN) on all batches, so the result never loses to RTN on the calibration loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from harness.quantized import QuantizedWeight
from harness.quantizers.calibration import layer_output
from harness.quantizers.layer import LayerInputs, LayerResult


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class _Rounding:
    """One Linear's learnable parameters and its quantize-dequantize function."""

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> None:
        w = weight.detach().float()
        self.shape = w.shape
        n, k = w.shape
        self.g = group_size
        self.bits = bits
        self.symmetric = symmetric
        self.wg = w.reshape(n, k // group_size, group_size)
        zeros = torch.zeros((), device=w.device)
        self.gmax = torch.maximum(self.wg.amax(-1), zeros)
        self.gmin = torch.minimum(self.wg.amin(-1), zeros)
        self.V = torch.zeros_like(self.wg, requires_grad=True)
        self.alpha = torch.ones_like(self.gmax, requires_grad=True)
        self.beta = torch.ones_like(self.gmin, requires_grad=True)

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.V, self.alpha, self.beta]

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maxq = 2**self.bits - 1
        if self.symmetric:
            half = 2 ** (self.bits - 1)
            amax = torch.maximum(self.gmax, -self.gmin)
            scale = (self.alpha * amax / half).clamp(min=1e-8)
            zero = torch.full_like(scale, float(half))
        else:
            wmax = self.alpha * self.gmax
            wmin = self.beta * self.gmin
            scale = ((wmax - wmin) / maxq).clamp(min=1e-8)
            zero = _round_ste(-wmin / scale).clamp(0, maxq)
        return scale, zero, torch.tensor(float(maxq))

    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale, zero, maxq = self.qparams()
        q = (_round_ste(self.wg / scale.unsqueeze(-1) + self.V) + zero.unsqueeze(-1)).clamp(0, maxq)
        return q, scale, zero

    def qdq(self) -> torch.Tensor:
        q, scale, zero = self.codes()
        return ((q - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(self.shape)

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def load(self, values: list[torch.Tensor]) -> None:
        for p, v in zip(self.params, values, strict=True):
            p.copy_(v)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for p in self.params:
            if p.grad is not None:
                p.sub_(lr * torch.sign(p.grad))
                p.grad = None
        self.V.clamp_(-0.5, 0.5)
        self.alpha.clamp_(0.0, 1.0)
        self.beta.clamp_(0.0, 1.0)

    @torch.no_grad()
    def result(self, bias: torch.Tensor | None) -> QuantizedWeight:
        q, scale, zero = self.codes()
        return QuantizedWeight(
            codes=q.reshape(self.shape).round().to(torch.uint8).cpu(),
            scales=scale.float().cpu(),
            zeros=zero.round().to(torch.uint8).cpu(),
            bits=self.bits,
            group_size=self.g,
            symmetric=self.symmetric,
            bias=None if bias is None else bias.detach().float().cpu().clone(),
        )


def signround_layer(
    layer: nn.Module, targets: Sequence[str], inputs: LayerInputs, recipe
) -> LayerResult:
    """Learn the rounding of ``targets`` in one fp32 decoder layer (not modified), so that the
    layer on the quantized model's inputs matches the full-precision outputs."""
    q_inputs, fp_outputs, kwargs_list = inputs.q_inputs, inputs.fp_outputs, inputs.kwargs
    layer.requires_grad_(False)
    rounding = {
        n: _Rounding(
            layer.get_submodule(n).weight, recipe.bits, recipe.group_size, recipe.symmetric
        )
        for n in targets
    }
    iters = recipe.iters
    lr0 = recipe.lr if recipe.lr is not None else 1.0 / iters
    rng = np.random.default_rng(recipe.seed)
    n_batches = len(q_inputs)

    def loss_on(b: int) -> torch.Tensor:
        params = {f"{n}.weight": r.qdq() for n, r in rounding.items()}
        out = layer_output(functional_call(layer, params, (q_inputs[b],), kwargs_list[b]))
        return (out.float() - fp_outputs[b]).pow(2).mean()

    @torch.no_grad()
    def full_loss() -> float:
        total, count = 0.0, 0
        for b in range(n_batches):
            total += float(loss_on(b)) * fp_outputs[b].numel()
            count += fp_outputs[b].numel()
        return total / count

    init = {n: r.snapshot() for n, r in rounding.items()}
    init_loss = full_loss()
    best_loss, best = float("inf"), init
    order: list[int] = []
    with torch.enable_grad():
        for t in range(iters):
            if not order:
                order = [int(i) for i in rng.permutation(n_batches)]
            loss = loss_on(order.pop())
            value = float(loss.detach())
            if value < best_loss:
                best_loss = value
                best = {n: r.snapshot() for n, r in rounding.items()}
            loss.backward()
            lr = lr0 * (1 - t / iters)
            for r in rounding.values():
                r.step(lr)
    for n, r in rounding.items():
        r.load(best[n])
    final_loss = full_loss()
    if final_loss > init_loss:
        for n, r in rounding.items():
            r.load(init[n])
        final_loss = init_loss
    out = {n: r.result(layer.get_submodule(n).bias) for n, r in rounding.items()}
    return LayerResult(out, info={"init_loss": init_loss, "final_loss": final_loss, "iters": iters})
