"""``W4A16Linear``: an ``nn.Linear`` replacement holding AWQ GEMM-packed 4-bit weights."""

from __future__ import annotations

import torch
from torch import nn

from harness.quantized import QuantizedWeight

from .awq_layout import PACK, check_awq_tensors, pack_awq, unpack_awq
from .fallback import awq_matmul_torch, dequantize_awq

BACKENDS = ("auto", "triton", "torch")


def _triton_module():
    """The Triton kernel module, or None where triton cannot be imported."""
    try:
        from . import triton_w4a16
    except Exception:  # pragma: no cover - broken triton installs
        return None
    return triton_w4a16 if triton_w4a16.HAVE_TRITON else None


def triton_available() -> bool:
    return _triton_module() is not None


def rtn_quantize(weight: torch.Tensor, group_size: int = 128) -> QuantizedWeight:
    """Plain round-to-nearest asymmetric 4-bit group quantisation (the spec's formulas).

    A convenience for :meth:`W4A16Linear.from_linear`; real recipes produce a
    :class:`QuantizedWeight` with the quantizers and pass it in.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight [N, K], got {tuple(weight.shape)}")
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
    maxq = 15
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    wmin = w.amin(-1).clamp(max=0.0)
    wmax = w.amax(-1).clamp(min=0.0)
    scale = ((wmax - wmin) / maxq).clamp(min=1e-8)
    zero = (-torch.round(wmin / scale)).clamp(0, maxq)
    codes = (torch.round(w / scale.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, maxq)
    return QuantizedWeight(
        codes=codes.reshape(n, k).to(torch.uint8),
        scales=scale,
        zeros=zero.to(torch.uint8),
        bits=4,
        group_size=group_size,
    )


class W4A16Linear(nn.Module):
    """4-bit weight, 16-bit activation Linear on the AWQ GEMM layout.

    Buffers (the AWQ checkpoint names): ``qweight`` int32 ``[K, N/8]``, ``qzeros``
    int32 ``[K/G, N/8]``, ``scales`` fp16 ``[K/G, N]``, optional ``bias`` ``[N]``.

    ``backend``: ``"auto"`` runs the Triton kernels for CUDA fp16/bf16 inputs when
    triton imports and the shape is supported, else the torch fallback; ``"triton"``
    insists (raises if it cannot); ``"torch"`` always uses the fallback.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int = 128,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if out_features % PACK:
            raise ValueError(f"out_features {out_features} is not a multiple of {PACK}")
        if in_features % group_size:
            raise ValueError(
                f"in_features {in_features} is not a multiple of group size {group_size}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.backend = backend
        self.act_dtype = dtype  # the activations' dtype: the model's compute dtype
        groups = in_features // group_size
        words = out_features // PACK
        self.register_buffer(
            "qweight", torch.zeros(in_features, words, dtype=torch.int32, device=device)
        )
        self.register_buffer("qzeros", torch.zeros(groups, words, dtype=torch.int32, device=device))
        self.register_buffer(
            "scales", torch.zeros(groups, out_features, dtype=torch.float16, device=device)
        )
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device))
        else:
            self.bias = None
        self.last_backend: str | None = None  # which path the latest forward took

    # -- constructors -------------------------------------------------------------

    @classmethod
    def from_packed(
        cls,
        qweight: torch.Tensor,
        qzeros: torch.Tensor,
        scales: torch.Tensor,
        group_size: int,
        bias: torch.Tensor | None = None,
        backend: str = "auto",
        dtype: torch.dtype | None = None,
    ) -> W4A16Linear:
        """From AWQ tensors; ``dtype``: the activations' (and bias's) dtype, by default the
        bias's, else fp16."""
        k, n = check_awq_tensors(qweight, qzeros, scales, group_size, bias)
        if dtype is None:
            dtype = bias.dtype if bias is not None else torch.float16
        mod = cls(
            k,
            n,
            group_size,
            bias=bias is not None,
            device=qweight.device,
            dtype=dtype,
            backend=backend,
        )
        mod.qweight.copy_(qweight)
        mod.qzeros.copy_(qzeros)
        mod.scales.copy_(scales.to(torch.float16))
        if bias is not None:
            mod.bias.copy_(bias)
        return mod

    @classmethod
    def from_quantized(
        cls,
        qw: QuantizedWeight,
        bias: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float16,
        backend: str = "auto",
    ) -> W4A16Linear:
        """From a :class:`QuantizedWeight` (4 bit); ``bias`` overrides ``qw.bias``."""
        packed = pack_awq(qw, bias=bias)
        b = packed.bias.to(dtype) if packed.bias is not None else None
        return cls.from_packed(
            packed.qweight, packed.qzeros, packed.scales, packed.group_size, b, backend, dtype
        )

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int = 128,
        quantized: QuantizedWeight | None = None,
        dtype: torch.dtype = torch.float16,
        backend: str = "auto",
    ) -> W4A16Linear:
        """Replace an ``nn.Linear``: quantise it with RTN unless ``quantized`` is given."""
        if quantized is None:
            quantized = rtn_quantize(linear.weight, group_size)
        elif tuple(quantized.shape) != (linear.out_features, linear.in_features):
            raise ValueError(
                f"quantized weight {tuple(quantized.shape)} does not match the Linear "
                f"[{linear.out_features}, {linear.in_features}]"
            )
        bias = linear.bias.detach() if linear.bias is not None else None
        mod = cls.from_quantized(quantized, bias=bias, dtype=dtype, backend=backend)
        return mod.to(linear.weight.device)

    # -- conversions --------------------------------------------------------------

    def to_quantized(self) -> QuantizedWeight:
        return unpack_awq(self.qweight, self.qzeros, self.scales, self.group_size, self.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[N, K]`` like ``nn.Linear.weight``."""
        return dequantize_awq(self.qweight, self.qzeros, self.scales, self.group_size, dtype).t()

    # -- forward ------------------------------------------------------------------

    def _use_triton(self, x: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        tw = _triton_module()
        if tw is None:
            ok, why = False, "triton is not importable"
        else:
            ok, why = tw.supported(x, self.out_features, self.group_size)
        if not ok and self.backend == "triton":
            raise RuntimeError(f"backend='triton' but the Triton kernel cannot run: {why}")
        return ok

    @property
    def kernel_backend(self) -> str:
        """The matmul path this layer's forward takes on its device (``triton`` or ``torch``);
        recorded with cached outputs, since the two paths round differently."""
        if self.backend == "torch" or self.qweight.device.type != "cuda":
            return "w4a16-torch"
        tw = _triton_module()
        if tw is None:
            return "w4a16-torch"
        probe = torch.empty(0, self.in_features, device=self.qweight.device, dtype=self.act_dtype)
        ok, _ = tw.supported(probe, self.out_features, self.group_size)
        return "w4a16-triton" if ok else "w4a16-torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_triton(x):
            from .triton_w4a16 import w4a16_matmul

            self.last_backend = "triton"
            return w4a16_matmul(
                x, self.qweight, self.qzeros, self.scales, self.group_size, self.bias
            )
        self.last_backend = "torch"
        return awq_matmul_torch(
            x, self.qweight, self.qzeros, self.scales, self.group_size, self.bias
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits=4, group_size={self.group_size}, bias={self.bias is not None}, "
            f"layout=awq_gemm, backend={self.backend}"
        )
