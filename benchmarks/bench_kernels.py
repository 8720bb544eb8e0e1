"""W4A16 Triton kernels against an fp16 matmul of the dequantized weight, on one GPU.

For the Linear shapes of a 7B LLaVA (LLaMA-2-7B decoder: K x N = 4096x4096 for
q/k/v/o, 4096x11008 for gate/up, 11008x4096 for down) at batch M in {1, 4, 16, 64}:

1. correctness: max abs error of the Triton output against the fp32 torch fallback
   (checked for every shape before it is timed);
2. time of the Triton kernel (the whole call, incl. the split-K zero-fill and cast)
   and of ``F.linear`` on the fp16 dequantized weight, both with
   ``triton.testing.do_bench`` (median, L2 flushed before every run, so the weights
   come from HBM as they would in a real decode step);
3. speedup, and achieved bandwidth = bytes moved / time, where bytes = packed
   weights + scales + zeros + bias + activations + outputs (fp16 baseline: the fp16
   weight + bias + activations + outputs), as a fraction of the GPU's peak
   (from a table keyed on the device name, or ``--peak-gbps``).

Prints a markdown table and then one JSON object. ``--sweep`` also times a grid of
split-K configurations for the decode batches and reports the best one per shape
(to retune ``pick_config`` on new hardware).

    python benchmarks/bench_kernels.py
    python benchmarks/bench_kernels.py --dtype bf16 --batches 1,16 --sweep --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

import torch
import torch.nn.functional as F

from harness.kernels import awq_matmul_torch, dequantize_awq, pack_columns

LLAVA_7B_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]

# Peak HBM bandwidth in GB/s by device-name substring; first match wins.
PEAK_GBPS = [
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H200", 4800.0),
    ("GH200", 4000.0),
    ("H800", 3350.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),  # 40 GB parts
    ("L40S", 864.0),
    ("L40", 864.0),
    ("RTX 4090", 1008.0),
    ("A10G", 600.0),
    ("L4", 300.0),
]

GOAL_SPEEDUP_B1 = 3.0
GOAL_PEAK_FRACTION_B1 = 0.75


def peak_for(name: str) -> float | None:
    for key, gbps in PEAK_GBPS:
        if key.lower() in name.lower():
            return gbps
    return None


def make_layer(k: int, n: int, g: int, device: torch.device, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    codes_kn = torch.randint(0, 16, (k, n), generator=gen, device=device, dtype=torch.int32)
    zeros_kn = torch.randint(0, 16, (k // g, n), generator=gen, device=device, dtype=torch.int32)
    scales = (torch.rand(k // g, n, generator=gen, device=device) * 0.004 + 1e-3).half()
    bias = (torch.randn(n, generator=gen, device=device) * 0.1).half()
    return pack_columns(codes_kn), pack_columns(zeros_kn), scales, bias


def w4_bytes(m: int, k: int, n: int, g: int, act_bytes: int) -> int:
    weights = k * n // 2
    zeros = (k // g) * n // 2
    scales = (k // g) * n * 2
    return weights + zeros + scales + n * act_bytes + m * k * act_bytes + m * n * act_bytes


def fp16_bytes(m: int, k: int, n: int, act_bytes: int) -> int:
    return k * n * act_bytes + n * act_bytes + m * k * act_bytes + m * n * act_bytes


def sweep_configs(tw, m: int, k: int, g: int):
    bm = 1 if m == 1 else max(16, triton_next_pow2(m))
    for block_n in (64, 128, 256):
        for block_k in (64, 128):
            if g % block_k:
                continue
            for split_k in (1, 2, 4, 8, 16):
                if (k // block_k) < split_k:
                    continue
                for warps in (4, 8):
                    yield tw.KernelConfig(
                        "splitk", bm, block_n, block_k, split_k=split_k, num_warps=warps
                    )


def triton_next_pow2(x: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,4,16,64", help="comma-separated M values")
    ap.add_argument(
        "--shapes",
        default=",".join(f"{k}x{n}" for k, n in LLAVA_7B_SHAPES),
        help="comma-separated KxN (in_features x out_features)",
    )
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--peak-gbps", type=float, default=None, help="override the peak table")
    ap.add_argument("--rep", type=int, default=200, help="do_bench repetition time (ms)")
    ap.add_argument("--sweep", action="store_true", help="also sweep split-K configs")
    ap.add_argument("--json", default=None, help="also write the JSON to this file")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print(
            "bench_kernels: no CUDA GPU visible (torch.cuda.is_available() is False); "
            "this benchmark times GPU kernels and has nothing to measure here.",
            file=sys.stderr,
        )
        return 2
    try:
        import triton
        import triton.testing

        from harness.kernels import triton_w4a16 as tw
    except Exception as exc:
        print(f"bench_kernels: triton is not importable ({exc!r})", file=sys.stderr)
        return 2
    if not tw.HAVE_TRITON or tw.interpreting():
        print("bench_kernels: unset TRITON_INTERPRET and install triton", file=sys.stderr)
        return 2

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    peak = args.peak_gbps or peak_for(name)
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    act_bytes = 2
    g = args.group_size
    batches = [int(b) for b in args.batches.split(",")]
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]

    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=25, rep=args.rep, return_mode="median")

    rows = []
    sweeps = []
    failures = 0
    for si, (k, n) in enumerate(shapes):
        qweight, qzeros, scales, bias = make_layer(k, n, g, dev, seed=si)
        bias = bias.to(dtype)
        w_nk = dequantize_awq(qweight, qzeros, scales, g, dtype=dtype).t().contiguous()
        for m in batches:
            x = torch.randn(m, k, device=dev).to(dtype)
            cfg = tw.pick_config(m, n, k, g, dev)
            out = tw.w4a16_matmul(x, qweight, qzeros, scales, g, bias)
            ref = awq_matmul_torch(x.float(), qweight, qzeros, scales, g, bias.float())
            err = float((out.float() - ref).abs().max())
            ref_max = float(ref.abs().max())
            eps = 2.0**-10 if dtype == torch.float16 else 2.0**-7
            ok = bool(err <= 2 * eps * ref_max + 1e-3) and bool(torch.isfinite(out).all())
            failures += not ok

            t_w4 = bench(partial(tw.w4a16_matmul, x, qweight, qzeros, scales, g, bias))
            t_fp = bench(partial(F.linear, x, w_nk, bias))
            gbps_w4 = w4_bytes(m, k, n, g, act_bytes) / (t_w4 * 1e-3) / 1e9
            gbps_fp = fp16_bytes(m, k, n, act_bytes) / (t_fp * 1e-3) / 1e9
            rows.append(
                {
                    "K": k,
                    "N": n,
                    "M": m,
                    "config": cfg.__dict__,
                    "max_abs_err": err,
                    "ref_max_abs": ref_max,
                    "correct": ok,
                    "w4a16_us": t_w4 * 1e3,
                    "fp16_us": t_fp * 1e3,
                    "speedup": t_fp / t_w4,
                    "w4a16_gbps": gbps_w4,
                    "fp16_gbps": gbps_fp,
                    "w4a16_peak_frac": gbps_w4 / peak if peak else None,
                    "fp16_peak_frac": gbps_fp / peak if peak else None,
                }
            )
            if args.sweep and m <= tw.SPLITK_MAX_M:
                best = None
                for c in sweep_configs(tw, m, k, g):
                    try:
                        o = tw.w4a16_matmul(x, qweight, qzeros, scales, g, bias, config=c)
                        if float((o.float() - ref).abs().max()) > 2 * eps * ref_max + 1e-3:
                            continue
                        t = bench(
                            partial(tw.w4a16_matmul, x, qweight, qzeros, scales, g, bias, config=c)
                        )
                    except Exception:  # noqa: BLE001 - a config that does not compile
                        continue
                    if best is None or t < best[0]:
                        best = (t, c)
                if best is not None:
                    sweeps.append(
                        {
                            "K": k,
                            "N": n,
                            "M": m,
                            "best_us": best[0] * 1e3,
                            "default_us": t_w4 * 1e3,
                            "best_config": best[1].__dict__,
                        }
                    )

    peak_txt = f"{peak:.0f} GB/s" if peak else "unknown (pass --peak-gbps)"
    print(f"\n## W4A16 (AWQ GEMM, G={g}, {args.dtype}) vs fp16 F.linear on {name}")
    print(f"peak HBM bandwidth: {peak_txt}; times are do_bench medians with L2 flushed\n")
    print(
        "| K x N | M | path (BMxBNxBK, split) | max abs err | W4A16 us | fp16 us | speedup "
        "| W4A16 GB/s | % peak | fp16 % peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["config"]
        pf = f"{100 * r['w4a16_peak_frac']:.0f}%" if peak else "n/a"
        pff = f"{100 * r['fp16_peak_frac']:.0f}%" if peak else "n/a"
        print(
            f"| {r['K']}x{r['N']} | {r['M']} | {c['path']} {c['block_m']}x{c['block_n']}x"
            f"{c['block_k']}, {c['split_k']} | {r['max_abs_err']:.2e}"
            f"{'' if r['correct'] else ' FAIL'} | {r['w4a16_us']:.1f} | {r['fp16_us']:.1f} "
            f"| {r['speedup']:.2f}x | {r['w4a16_gbps']:.0f} | {pf} | {pff} |"
        )
    b1 = [r for r in rows if r["M"] == 1]
    goals = {}
    if b1:
        min_speed = min(r["speedup"] for r in b1)
        goals["batch1_min_speedup"] = min_speed
        goals["batch1_speedup_goal_met"] = min_speed >= GOAL_SPEEDUP_B1
        if peak:
            min_frac = min(r["w4a16_peak_frac"] for r in b1)
            goals["batch1_min_peak_frac"] = min_frac
            goals["batch1_bandwidth_goal_met"] = min_frac >= GOAL_PEAK_FRACTION_B1
        print(
            f"\nbatch 1: min speedup {min_speed:.2f}x (goal >= {GOAL_SPEEDUP_B1}x)"
            + (
                f", min bandwidth {100 * goals['batch1_min_peak_frac']:.0f}% of peak "
                f"(goal >= {100 * GOAL_PEAK_FRACTION_B1:.0f}%)"
                if peak
                else ""
            )
        )
    if sweeps:
        print("\n| K x N | M | default us | best us | best config |")
        print("|---|---|---|---|---|")
        for s in sweeps:
            c = s["best_config"]
            print(
                f"| {s['K']}x{s['N']} | {s['M']} | {s['default_us']:.1f} | {s['best_us']:.1f} "
                f"| BM{c['block_m']} BN{c['block_n']} BK{c['block_k']} split{c['split_k']} "
                f"warps{c['num_warps']} |"
            )
    report = {
        "device": name,
        "peak_gbps": peak,
        "dtype": args.dtype,
        "group_size": g,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "rows": rows,
        "goals": goals,
        "sweep": sweeps,
        "correctness_failures": failures,
    }
    text = json.dumps(report, indent=2)
    print("\n" + text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
