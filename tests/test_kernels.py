"""W4A16 kernels: AWQ GEMM packing, the torch fallback, W4A16Linear, and the Triton
kernels (under ``TRITON_INTERPRET=1`` on CPU, in a subprocess; natively on a GPU).

Run as a script with ``--interp-worker`` this file is the interpreter worker: the
parent sets ``TRITON_INTERPRET=1`` in the child's environment, so the variable is
in place before triton is first imported there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.kernels import (
    AWQ_ORDER,
    AWQ_REVERSE_ORDER,
    AWQPacked,
    W4A16Linear,
    awq_matmul_torch,
    dequantize_awq,
    pack_awq,
    pack_columns,
    rtn_quantize,
    unpack_awq,
    unpack_columns,
)
from harness.quantized import QuantizedWeight

EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23}


def random_qw(n: int, k: int, g: int, seed: int = 0, bias: bool = False) -> QuantizedWeight:
    """Random 4-bit weight whose scales are exactly representable in fp16."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    zeros = torch.randint(0, 16, (n, k // g), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(n, k // g, generator=gen) * 0.02 + 1e-3).half().float()
    b = torch.randn(n, generator=gen).half().float() if bias else None
    return QuantizedWeight(codes, scales, zeros, bits=4, group_size=g, bias=b)


# -- AWQ layout ------------------------------------------------------------------------


def test_order_constants_are_inverse():
    assert AWQ_ORDER == (0, 2, 4, 6, 1, 3, 5, 7)
    assert [AWQ_ORDER[AWQ_REVERSE_ORDER[j]] for j in range(8)] == list(range(8))


def test_pack_hand_built_word():
    # Columns 0..7 of one row hold values 1..8. Nibble i (bits 4i..4i+3) must hold
    # column ORDER[i], i.e. value ORDER[i] + 1: nibbles (low -> high) 1,3,5,7,2,4,6,8,
    # so the word is 0x86427531, which as int32 is 0x86427531 - 2**32.
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8)
    packed = pack_columns(codes)
    assert packed.dtype == torch.int32
    assert packed.tolist() == [[0x86427531 - 2**32]]
    assert torch.equal(unpack_columns(packed), codes)


def test_pack_nibble_order_explicit():
    # codes^T[k, n] = (3n + 5k) % 16 covers every nibble value incl. 8..15 (sign bit).
    n, k, g = 24, 8, 4
    kk = torch.arange(k).unsqueeze(0)
    nn_ = torch.arange(n).unsqueeze(1)
    codes = ((3 * nn_ + 5 * kk) % 16).to(torch.uint8)  # [N, K]
    zeros = ((nn_ + torch.arange(k // g).unsqueeze(0)) % 16).to(torch.uint8)
    qw = QuantizedWeight(codes, torch.ones(n, k // g), zeros, bits=4, group_size=g)
    p = pack_awq(qw)
    assert tuple(p.qweight.shape) == (k, n // 8)
    assert tuple(p.qzeros.shape) == (k // g, n // 8)
    assert tuple(p.scales.shape) == (k // g, n) and p.scales.dtype == torch.float16
    words = p.qweight.to(torch.int64) & 0xFFFFFFFF  # unsigned view
    zwords = p.qzeros.to(torch.int64) & 0xFFFFFFFF
    for row in range(k):
        for c in range(n // 8):
            for i in range(8):
                col = 8 * c + AWQ_ORDER[i]
                assert (int(words[row, c]) >> (4 * i)) & 0xF == int(codes[col, row])
    for grp in range(k // g):
        for c in range(n // 8):
            for i in range(8):
                col = 8 * c + AWQ_ORDER[i]
                assert (int(zwords[grp, c]) >> (4 * i)) & 0xF == int(zeros[col, grp])


@pytest.mark.parametrize("n,k,g", [(64, 256, 128), (8, 32, 32), (136, 192, 64)])
def test_round_trip_bit_exact(n, k, g):
    qw = random_qw(n, k, g, seed=n + k, bias=True)
    qw.codes[0, :16] = 15  # all-ones nibbles: words with the sign bit set
    qw.zeros[0, 0] = 15
    p = pack_awq(qw)
    back = unpack_awq(p.qweight, p.qzeros, p.scales, p.group_size, p.bias)
    assert torch.equal(back.codes, qw.codes) and back.codes.dtype == torch.uint8
    assert torch.equal(back.zeros, qw.zeros) and back.zeros.dtype == torch.uint8
    assert torch.equal(back.scales, qw.scales)
    assert torch.equal(back.bias, qw.bias)
    assert back.bits == 4 and back.group_size == g
    assert torch.equal(p.to_quantized().codes, qw.codes)


def test_round_trip_fp32_scales():
    qw = random_qw(16, 64, 32)
    qw.scales += 1e-7  # not fp16-representable any more
    p = pack_awq(qw, scales_dtype=torch.float32)
    assert torch.equal(unpack_awq(p.qweight, p.qzeros, p.scales, 32).scales, qw.scales)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_awq(random_qw(12, 64, 32))
    qw = random_qw(16, 64, 32)
    with pytest.raises(ValueError, match="4-bit"):
        pack_awq(QuantizedWeight(qw.codes, qw.scales, qw.zeros, bits=8, group_size=32))
    with pytest.raises(ValueError, match="0..15"):
        pack_columns(torch.full((2, 8), 16, dtype=torch.int32))
    with pytest.raises(TypeError, match="integer"):
        pack_columns(torch.zeros(2, 8))
    p = pack_awq(qw)
    with pytest.raises(ValueError, match="qzeros shape"):
        AWQPacked(p.qweight, p.qzeros[:1], p.scales, 32)
    with pytest.raises(ValueError, match="scales shape"):
        AWQPacked(p.qweight, p.qzeros, p.scales[:, :8], 32)
    with pytest.raises(ValueError, match="group size"):
        AWQPacked(p.qweight, p.qzeros, p.scales, 48)
    with pytest.raises(TypeError, match="int32"):
        AWQPacked(p.qweight.to(torch.int64), p.qzeros, p.scales, 32)
    with pytest.raises(ValueError, match="bias"):
        AWQPacked(p.qweight, p.qzeros, p.scales, 32, bias=torch.zeros(15))


# -- torch fallback --------------------------------------------------------------------


def test_dequantize_matches_contract():
    qw = random_qw(72, 256, 64)
    p = pack_awq(qw)
    w = dequantize_awq(p.qweight, p.qzeros, p.scales, 64)
    assert torch.equal(w, qw.dequantize().t())


@pytest.mark.parametrize("bias", [False, True])
def test_fallback_fp32_matches_dequantized_matmul(bias):
    qw = random_qw(64, 256, 128, seed=3, bias=bias)
    p = pack_awq(qw)
    x = torch.randn(2, 5, 256)
    ref = x @ qw.dequantize().t()
    if bias:
        ref = ref + qw.bias
    out = awq_matmul_torch(x, p.qweight, p.qzeros, p.scales, 128, p.bias)
    assert out.shape == (2, 5, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fallback_half_activations(dtype):
    qw = random_qw(64, 256, 64, seed=4)
    p = pack_awq(qw)
    x = torch.randn(3, 256).to(dtype)
    out = awq_matmul_torch(x, p.qweight, p.qzeros, p.scales, 64)
    ref = x.float() @ qw.dequantize().t()
    assert out.dtype == dtype
    tol = EPS[dtype] * float(ref.abs().max())
    assert float((out.float() - ref).abs().max()) <= tol


def test_fallback_rejects_wrong_features():
    p = pack_awq(random_qw(16, 64, 32))
    with pytest.raises(ValueError, match="expects 64"):
        awq_matmul_torch(torch.randn(2, 32), p.qweight, p.qzeros, p.scales, 32)


# -- W4A16Linear -----------------------------------------------------------------------


def test_linear_from_quantized_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    qw = random_qw(64, 256, 128, seed=5, bias=True)
    mod = W4A16Linear.from_quantized(qw, dtype=torch.float32)
    x = torch.randn(2, 3, 256)
    out = mod(x)
    assert mod.last_backend == "torch"
    torch.testing.assert_close(out, x @ qw.dequantize().t() + qw.bias, rtol=1e-5, atol=1e-5)
    assert set(mod.state_dict()) == {"qweight", "qzeros", "scales", "bias"}
    back = mod.to_quantized()
    assert torch.equal(back.codes, qw.codes) and torch.equal(back.zeros, qw.zeros)
    assert torch.equal(mod.dequantized_weight(), qw.dequantize())
    r = repr(mod)
    assert "in_features=256" in r and "out_features=64" in r and "group_size=128" in r


def test_linear_from_linear_and_packed(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(0)
    lin = nn.Linear(256, 128, bias=True)
    mod = W4A16Linear.from_linear(lin, group_size=64, dtype=torch.float32)
    x = torch.randn(4, 256)
    ref = lin(x).detach()
    out = mod(x)
    # 4-bit RTN: error well below the output scale, but not zero.
    rel = float((out - ref).norm() / ref.norm())
    assert 0 < rel < 0.15
    qw = rtn_quantize(lin.weight, 64)
    assert torch.equal(mod.to_quantized().codes, qw.codes)
    again = W4A16Linear.from_packed(mod.qweight, mod.qzeros, mod.scales, 64, mod.bias)
    torch.testing.assert_close(again(x), out)
    nobias = W4A16Linear.from_linear(nn.Linear(256, 64, bias=False), group_size=128)
    assert nobias.bias is None and "bias=False" in repr(nobias)
    assert nobias(torch.randn(1, 256, dtype=torch.float16)).dtype == torch.float16


def test_linear_rejects_bad_config(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="multiple of 8"):
        W4A16Linear(256, 60)
    with pytest.raises(ValueError, match="group size"):
        W4A16Linear(200, 64, group_size=128)
    with pytest.raises(ValueError, match="backend"):
        W4A16Linear(256, 64, backend="cuda")
    with pytest.raises(ValueError, match="does not match"):
        W4A16Linear.from_linear(nn.Linear(256, 64), quantized=random_qw(64, 128, 128))
    strict = W4A16Linear.from_quantized(random_qw(64, 256, 128), backend="triton")
    with pytest.raises(RuntimeError, match="Triton kernel cannot run"):
        strict(torch.randn(1, 256, dtype=torch.float16))


# -- Triton kernels under the interpreter (subprocess) ---------------------------------

# (dtype, M, K, N, G, path, split_k, bias)
INTERP_CASES = [
    (dt, m, 256, 64, g, path, sk, bias)
    for dt in ("float16", "bfloat16")
    for m in (1, 3, 16)
    for g in (128, 64)
    for path, sk in (("auto", None), ("splitk", 2), ("gemm", None))
    for bias in ((g == 128),)
] + [
    ("float16", 3, 384, 72, 128, "splitk", 2, True),  # uneven split, N not a block multiple
    ("bfloat16", 1, 384, 72, 32, "splitk", 4, False),  # G = 32, more splits than needed
    ("float16", 20, 128, 40, 32, "splitk", 1, True),  # two M blocks, direct store
    ("bfloat16", 70, 256, 136, 64, "auto", None, True),  # auto -> tiled GEMM, M/N tails
    ("float16", 130, 128, 64, 128, "gemm", None, False),  # several M blocks, grouped order
]


def _case_id(case) -> str:
    dt, m, k, n, g, path, sk, bias = case
    return (
        f"{dt}-M{m}-K{k}-N{n}-G{g}-{path}" + (f"-sk{sk}" if sk else "") + ("-bias" if bias else "")
    )


def _interp_worker() -> None:
    """Child process: TRITON_INTERPRET=1 is already in the environment."""
    try:
        import triton  # noqa: F401

        from harness.kernels import triton_w4a16 as tw

        if not tw.HAVE_TRITON:
            raise ImportError("triton_w4a16 could not import triton")
        # Probe: can the interpreter run a trivial kernel here at all?
        import triton.language as tl

        @triton.jit
        def _probe(p):
            tl.store(p + tl.arange(0, 8), tl.arange(0, 8))

        buf = torch.zeros(8, dtype=torch.int32)
        _probe[(1,)](buf)
        assert buf.tolist() == list(range(8))
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot run"
        print(json.dumps({"skip": f"Triton interpreter unavailable: {exc!r}"}))
        return

    results = {}
    for case in INTERP_CASES:
        dt, m, k, n, g, path, sk, bias = case
        dtype = getattr(torch, dt)
        t0 = time.perf_counter()
        try:
            qw = random_qw(n, k, g, seed=m * 7 + g, bias=bias)
            p = pack_awq(qw)
            x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
            b = p.bias.to(dtype) if bias else None
            out = tw.w4a16_matmul(x, p.qweight, p.qzeros, p.scales, g, b, path=path, split_k=sk)
            ref = x.float() @ qw.dequantize().t()
            if bias:
                ref = ref + b.float()
            results[_case_id(case)] = {
                "err": float((out.float() - ref).abs().max()),
                "ref_max": float(ref.abs().max()),
                "dtype_ok": out.dtype == dtype and tuple(out.shape) == (m, n),
                "seconds": time.perf_counter() - t0,
            }
        except Exception as exc:  # noqa: BLE001 - reported to the parent as a failure
            results[_case_id(case)] = {"error": repr(exc)}
    # W4A16Linear must pick the Triton path under the interpreter, 3-D input.
    try:
        mod = W4A16Linear.from_quantized(random_qw(64, 256, 128, seed=9, bias=True))
        x = torch.randn(2, 2, 256).half()
        out = mod(x)
        ref = x.float() @ mod.dequantized_weight().t() + mod.bias.float()
        results["linear"] = {
            "err": float((out.float() - ref).abs().max()),
            "ref_max": float(ref.abs().max()),
            "dtype_ok": mod.last_backend == "triton" and out.shape == (2, 2, 64),
        }
    except Exception as exc:  # noqa: BLE001
        results["linear"] = {"error": repr(exc)}
    print(json.dumps({"results": results}))


@pytest.fixture(scope="module")
def interp_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--interp-worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreter worker crashed:\n{proc.stderr[-4000:]}")
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in payload:
        pytest.skip(payload["skip"])
    payload["results"]["_wall"] = time.perf_counter() - t0
    return payload["results"]


def _check(res: dict, dtype: torch.dtype) -> None:
    assert "error" not in res, res.get("error")
    assert res["dtype_ok"]
    # Output rounding dominates: one unit in the last place of the largest output
    # (bf16 under the interpreter truncates instead of rounding) plus fp32 slack.
    # A wrong nibble, group or split would be off by O(ref_max).
    tol = 1.5 * EPS[dtype] * res["ref_max"] + 1e-4
    assert res["err"] <= tol, f"max abs err {res['err']:.3g} > {tol:.3g}"


@pytest.mark.parametrize("case", INTERP_CASES, ids=_case_id)
def test_triton_interpreter(interp_results, case):
    _check(interp_results[_case_id(case)], getattr(torch, case[0]))


def test_triton_interpreter_linear_and_speed(interp_results):
    _check(interp_results["linear"], torch.float16)
    assert interp_results["_wall"] < 60


# -- Triton on a real GPU --------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 4, 16, 64, 200])
@pytest.mark.parametrize("k,n", [(4096, 4096), (4096, 11008), (11008, 4096)])
def test_triton_gpu_llava_shapes(dtype, m, k, n):
    pytest.importorskip("triton")
    from harness.kernels import triton_w4a16 as tw

    qw = random_qw(n, k, 128, seed=m, bias=True)
    p = pack_awq(qw)
    dev = torch.device("cuda")
    qweight, qzeros, scales = (t.to(dev) for t in (p.qweight, p.qzeros, p.scales))
    bias = p.bias.to(dev, dtype)
    x = torch.randn(m, k, device=dev).to(dtype)
    out = tw.w4a16_matmul(x, qweight, qzeros, scales, 128, bias)
    ref = x.float() @ dequantize_awq(qweight, qzeros, scales, 128) + bias.float()
    tol = 2 * EPS[dtype] * float(ref.abs().max()) + 1e-3
    assert float((out.float() - ref).abs().max()) <= tol


@needs_gpu
@pytest.mark.parametrize("g", [32, 64, 128])
def test_triton_gpu_group_sizes_and_linear(g):
    pytest.importorskip("triton")
    mod = W4A16Linear.from_quantized(random_qw(256, 512, g, bias=True)).cuda()
    for m in (1, 5, 100):
        x = torch.randn(m, 512, device="cuda", dtype=torch.float16)
        out = mod(x)
        assert mod.last_backend == "triton"
        ref = x.float() @ mod.dequantized_weight().t() + mod.bias.float()
        assert float((out.float() - ref).abs().max()) <= 2e-3 * float(ref.abs().max()) + 1e-3


if __name__ == "__main__" and "--interp-worker" in sys.argv:
    _interp_worker()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_recorded_kernel_backend_is_the_path_forward_takes(dtype):
    # the fingerprint records kernel_backend; it must name the path the outputs came from
    device = "cuda" if torch.cuda.is_available() else "cpu"
    linear = torch.nn.Linear(128, 64, bias=False).to(device=device, dtype=dtype)
    layer = W4A16Linear.from_linear(linear, group_size=32, dtype=dtype)
    assert layer.act_dtype == dtype
    layer(torch.randn(2, 128, device=device, dtype=dtype))
    assert layer.kernel_backend == f"w4a16-{layer.last_backend}"
    if device == "cpu" or dtype == torch.float32:
        assert layer.kernel_backend == "w4a16-torch"
