"""Triton W4A16 kernels that read the AWQ GEMM layout directly.

Two paths, both accumulating in fp32 and taking fp16 or bf16 activations:

* **split-K** (decode, ``M <= SPLITK_MAX_M``): the grid is
  ``(N blocks, K splits, M blocks)``. Each program streams the packed words of a
  ``[K slice, BLOCK_N]`` strip of the weight exactly once, unpacks the nibbles with
  shifts, and reduces against the matching slice of the activations. For ``M == 1``
  the reduction is a broadcast multiply + sum in fp32 (no tensor cores, no padding);
  for ``1 < M`` it is a ``tl.dot`` on a ``BLOCK_M >= 16`` tile. Partial sums of the
  K splits meet in an fp32 buffer through ``tl.atomic_add``; with one split the
  program writes the output (dtype, bias fused) directly.
* **tiled GEMM** (prefill, larger ``M``): classic ``[BLOCK_M, BLOCK_N]`` output tiles
  in grouped (L2-friendly) order, full K per program, ``tl.dot`` on tensor cores,
  output written once in the activation dtype with the bias fused.

Both use the same dequantisation shortcut. Inside a ``BLOCK_K`` tile the group is
constant (``BLOCK_K`` divides the group size), so with codes ``q``, zero ``z`` and
scale ``s`` of that group::

    sum_k x[m,k] * (q[k,n] - z[n]) * s[n] = s[n] * (sum_k x[m,k] q[k,n] - z[n] sum_k x[m,k])

The inner product runs on the raw codes (0..15 are exact in fp16/bf16), and the
zero point and scale are applied once per tile and column, in fp32.

Unpacking: the tile of int32 words ``[BLOCK_K, BLOCK_N/8]`` is broadcast against
eight shifts to ``[BLOCK_K, BLOCK_N/8, 8]`` and reshaped to ``[BLOCK_K, BLOCK_N]``:
column ``8c + j`` comes from nibble ``(j >> 1) | ((j & 1) << 2)`` of word ``c``,
which is the AWQ order ``[0, 2, 4, 6, 1, 3, 5, 7]`` inverted.

Requirements checked by :func:`supported`: CUDA tensors (or CPU tensors under
``TRITON_INTERPRET=1``), fp16/bf16 activations, ``N % 8 == 0``, group size a multiple
of 16 (so a power-of-two ``BLOCK_K >= 16`` divides it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

try:  # triton is optional: W4A16Linear falls back to torch without it
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    triton = None
    tl = None
    HAVE_TRITON = False

from .awq_layout import PACK, check_awq_tensors

SPLITK_MAX_M = 64  # M at or below this takes the split-K path
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class KernelConfig:
    path: str  # "splitk" or "gemm"
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


def _block_k_for(group_size: int, preferred: int) -> int:
    """Largest power of two <= ``preferred`` that divides the group size (>= 16)."""
    bk = math.gcd(group_size, preferred)
    if bk < 16 or bk & (bk - 1):
        raise ValueError(
            f"group size {group_size} is not supported by the Triton kernels "
            "(need a multiple of 16)"
        )
    return bk


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: keep the grid small


def pick_config(m: int, n: int, k: int, group_size: int, device: torch.device) -> KernelConfig:
    """Fixed heuristic table (no autotuning: deterministic and free at first call)."""
    if m <= SPLITK_MAX_M:
        block_m = 1 if m == 1 else max(16, min(64, triton.next_power_of_2(m)))
        block_n = 128 if m <= 16 else 64
        block_k = _block_k_for(group_size, 128 if m <= 16 else 64)
        n_blocks = triton.cdiv(n, block_n) * triton.cdiv(m, block_m)
        k_iters = k // block_k
        # Aim for about four programs per SM, but keep >= 2 K tiles per program so
        # the loads of one tile overlap the math of the previous one.
        target = 4 * _sm_count(device)
        split_k = 1
        while n_blocks * split_k * 2 <= target and k_iters // (split_k * 2) >= 2:
            split_k *= 2
        return KernelConfig(
            "splitk", block_m, block_n, block_k, split_k=split_k, num_warps=4, num_stages=3
        )
    if m <= 128:
        return KernelConfig(
            "gemm", 64, 128, _block_k_for(group_size, 64), num_warps=4, num_stages=4
        )
    return KernelConfig("gemm", 128, 128, _block_k_for(group_size, 64), num_warps=8, num_stages=3)


def supported(x: torch.Tensor, n: int, group_size: int) -> tuple[bool, str]:
    """Whether the Triton kernels can run this call, and why not."""
    if not HAVE_TRITON:
        return False, "triton is not importable"
    if not (x.is_cuda or interpreting()):
        return False, "activations are not on a CUDA device"
    if x.dtype not in SUPPORTED_DTYPES:
        return False, f"activation dtype {x.dtype} (Triton path takes fp16 / bf16)"
    if n % PACK:
        return False, f"out_features {n} is not a multiple of {PACK}"
    if group_size % 16:
        return False, f"group size {group_size} is not a multiple of 16"
    return True, ""


if HAVE_TRITON:

    @triton.jit
    def _unpack_2d(words, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
        """int32 words ``[ROWS, BLOCK_N/8]`` -> int32 codes ``[ROWS, BLOCK_N]``."""
        j = tl.arange(0, 8)
        shifts = ((j >> 1) | ((j & 1) << 2)) * 4
        q = (words[:, :, None] >> shifts[None, None, :]) & 0xF
        return tl.reshape(q, (ROWS, BLOCK_N))

    @triton.jit
    def _unpack_1d(words, BLOCK_N: tl.constexpr):
        """int32 words ``[BLOCK_N/8]`` -> int32 codes ``[BLOCK_N]``."""
        j = tl.arange(0, 8)
        shifts = ((j >> 1) | ((j & 1) << 2)) * 4
        q = (words[:, None] >> shifts[None, :]) & 0xF
        return tl.reshape(q, (BLOCK_N,))

    @triton.jit
    def _w4a16_splitk_kernel(
        x_ptr,
        qw_ptr,
        qz_ptr,
        s_ptr,
        b_ptr,
        out_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_om,
        stride_wk,
        GROUP_SIZE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        DOT_F32: tl.constexpr,
        EVEN_N: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        pid_m = tl.program_id(2)
        WORDS_N: tl.constexpr = BLOCK_N // 8

        k_iters = K // BLOCK_K
        per_split = tl.cdiv(k_iters, SPLIT_K)
        it_start = pid_k * per_split
        it_end = tl.minimum(it_start + per_split, k_iters)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_w = pid_n * WORDS_N + tl.arange(0, WORDS_N)
        offs_k = tl.arange(0, BLOCK_K)
        mask_m = offs_m < M
        # EVEN_N: N is a multiple of BLOCK_N, so the weight-side loads need no mask
        # (lets Triton vectorise them). Else mask with stride_wk == N/8, which the
        # launcher's divisibility-16 specialisation usually covers.
        if EVEN_N:
            mask_n = tl.full((BLOCK_N,), 1, tl.int1)
            mask_w = tl.full((WORDS_N,), 1, tl.int1)
        else:
            mask_n = offs_n < N
            mask_w = offs_w < stride_wk

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for it in range(it_start, it_end):
            k0 = it * BLOCK_K
            words = tl.load(
                qw_ptr + (k0 + offs_k)[:, None] * stride_wk + offs_w[None, :],
                mask=mask_w[None, :],
                other=0,
            )
            g = k0 // GROUP_SIZE
            zw = tl.load(qz_ptr + g * stride_wk + offs_w, mask=mask_w, other=0)
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = _unpack_1d(zw, BLOCK_N).to(tl.float32)
            q = _unpack_2d(words, BLOCK_K, BLOCK_N)
            if BLOCK_M == 1:
                xv = tl.load(x_ptr + pid_m * stride_xm + k0 + offs_k).to(tl.float32)
                part = tl.sum(xv[:, None] * q.to(tl.float32), axis=0)
                xs = tl.sum(xv, axis=0)
                acc += ((part - xs * z) * s)[None, :]
            else:
                a = tl.load(
                    x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :],
                    mask=mask_m[:, None],
                    other=0.0,
                )
                if DOT_F32:
                    part = tl.dot(a.to(tl.float32), q.to(tl.float32))
                else:
                    part = tl.dot(a, q.to(a.dtype))
                xs = tl.sum(a.to(tl.float32), axis=1)
                acc += (part - xs[:, None] * z[None, :]) * s[None, :]

        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            if SPLIT_K == 1:
                acc += bias[None, :]
            else:
                acc += tl.where(pid_k == 0, 1.0, 0.0) * bias[None, :]
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        out_mask = mask_m[:, None] & mask_n[None, :]
        if SPLIT_K == 1:
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
        else:
            tl.atomic_add(out_ptrs, acc, mask=out_mask)

    @triton.jit
    def _w4a16_gemm_kernel(
        x_ptr,
        qw_ptr,
        qz_ptr,
        s_ptr,
        b_ptr,
        out_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_om,
        stride_wk,
        GROUP_SIZE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        DOT_F32: tl.constexpr,
        EVEN_N: tl.constexpr,
    ):
        pid = tl.program_id(0)
        WORDS_N: tl.constexpr = BLOCK_N // 8
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        # Grouped launch order: GROUP_M row blocks share each weight strip in L2.
        pids_per_group = GROUP_M * num_pid_n
        group_id = pid // pids_per_group
        first_m = group_id * GROUP_M
        rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + ((pid % pids_per_group) % rows_in_group)
        pid_n = (pid % pids_per_group) // rows_in_group

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_w = pid_n * WORDS_N + tl.arange(0, WORDS_N)
        offs_k = tl.arange(0, BLOCK_K)
        mask_m = offs_m < M
        # EVEN_N: N is a multiple of BLOCK_N, so the weight-side loads need no mask
        # (lets Triton vectorise them). Else mask with stride_wk == N/8, which the
        # launcher's divisibility-16 specialisation usually covers.
        if EVEN_N:
            mask_n = tl.full((BLOCK_N,), 1, tl.int1)
            mask_w = tl.full((WORDS_N,), 1, tl.int1)
        else:
            mask_n = offs_n < N
            mask_w = offs_w < stride_wk

        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
        w_ptrs = qw_ptr + offs_k[:, None] * stride_wk + offs_w[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
            words = tl.load(w_ptrs, mask=mask_w[None, :], other=0)
            g = k0 // GROUP_SIZE
            zw = tl.load(qz_ptr + g * stride_wk + offs_w, mask=mask_w, other=0)
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = _unpack_1d(zw, BLOCK_N).to(tl.float32)
            q = _unpack_2d(words, BLOCK_K, BLOCK_N)
            if DOT_F32:
                part = tl.dot(a.to(tl.float32), q.to(tl.float32))
            else:
                part = tl.dot(a, q.to(a.dtype))
            xs = tl.sum(a.to(tl.float32), axis=1)
            acc += (part - xs[:, None] * z[None, :]) * s[None, :]
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K * stride_wk

        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            acc += bias[None, :]
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(
            out_ptrs,
            acc.to(out_ptr.dtype.element_ty),
            mask=mask_m[:, None] & mask_n[None, :],
        )


def w4a16_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
    *,
    config: KernelConfig | None = None,
    path: str = "auto",
    split_k: int | None = None,
) -> torch.Tensor:
    """``x [..., K] @ dequant(W)^T + bias`` -> ``[..., N]`` in ``x.dtype`` with Triton.

    ``path`` forces ``"splitk"`` or ``"gemm"``; ``split_k`` overrides the heuristic;
    ``config`` overrides everything (used by the benchmark's sweep and the tests).
    """
    k, n = check_awq_tensors(qweight, qzeros, scales, group_size, bias)
    ok, why = supported(x, n, group_size)
    if not ok:
        raise ValueError(f"Triton W4A16 kernel cannot run this call: {why}")
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects {k}")
    for name, t in (("qweight", qweight), ("qzeros", qzeros), ("scales", scales)):
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, activations on {x.device}")
    qweight = qweight.contiguous()
    qzeros = qzeros.contiguous()
    scales = scales.contiguous()
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    if m == 0:
        return x.new_empty(*x.shape[:-1], n)

    if config is None:
        if path == "auto":
            config = pick_config(m, n, k, group_size, x.device)
        elif path in ("splitk", "gemm"):
            mm = min(m, SPLITK_MAX_M) if path == "splitk" else max(m, SPLITK_MAX_M + 1)
            config = pick_config(mm, n, k, group_size, x.device)
        else:
            raise ValueError(f"unknown path {path!r}; expected auto, splitk or gemm")
        if split_k is not None:
            if config.path != "splitk":
                raise ValueError("split_k applies only to the split-K path")
            config = KernelConfig(
                "splitk",
                config.block_m,
                config.block_n,
                config.block_k,
                split_k=split_k,
                num_warps=config.num_warps,
                num_stages=config.num_stages,
            )
    if group_size % config.block_k:
        raise ValueError(f"BLOCK_K {config.block_k} does not divide group size {group_size}")
    if config.path == "splitk" and config.block_m == 1 and m != 1:
        raise ValueError("BLOCK_M = 1 (GEMV) needs exactly one row of activations")

    has_bias = bias is not None
    # Triton 3.8's interpreter mishandles bf16 tl.dot and int -> bf16 casts (bf16 is
    # stored as raw uint16 there), so only under the interpreter the bf16 tiles are
    # upcast to fp32 for the dot. On GPU the dot always runs in the activation dtype.
    dot_f32 = interpreting() and x.dtype == torch.bfloat16
    bias_arg = bias.contiguous() if has_bias else scales  # placeholder pointer, never read
    if config.path == "splitk":
        atomic = config.split_k > 1
        out = (
            torch.zeros(m, n, dtype=torch.float32, device=x.device)
            if atomic
            else torch.empty(m, n, dtype=x.dtype, device=x.device)
        )
        grid = (
            triton.cdiv(n, config.block_n),
            config.split_k,
            triton.cdiv(m, config.block_m),
        )
        _w4a16_splitk_kernel[grid](
            x2,
            qweight,
            qzeros,
            scales,
            bias_arg,
            out,
            m,
            n,
            k,
            x2.stride(0),
            out.stride(0),
            n // PACK,
            GROUP_SIZE=group_size,
            BLOCK_M=config.block_m,
            BLOCK_N=config.block_n,
            BLOCK_K=config.block_k,
            SPLIT_K=config.split_k,
            HAS_BIAS=has_bias,
            DOT_F32=dot_f32,
            EVEN_N=n % config.block_n == 0,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
        if atomic:
            out = out.to(x.dtype)
    elif config.path == "gemm":
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
        _w4a16_gemm_kernel[grid](
            x2,
            qweight,
            qzeros,
            scales,
            bias_arg,
            out,
            m,
            n,
            k,
            x2.stride(0),
            out.stride(0),
            n // PACK,
            GROUP_SIZE=group_size,
            BLOCK_M=config.block_m,
            BLOCK_N=config.block_n,
            BLOCK_K=config.block_k,
            GROUP_M=config.group_m,
            HAS_BIAS=has_bias,
            DOT_F32=dot_f32,
            EVEN_N=n % config.block_n == 0,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
    else:
        raise ValueError(f"unknown kernel path {config.path!r}")
    return out.reshape(*x.shape[:-1], n)
