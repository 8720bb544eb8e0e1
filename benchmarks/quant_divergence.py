"""How far does each quant recipe move the model's answers? KL divergence from FP32.

Accuracy on a few hundred documents moves by a point or two under W3/W4 on
toy-llava, which is within its noise (docs/research/quantizer-study.md). This script
measures the change itself, as Dutta et al. (2024, "Accuracy is not all you
need") recommend next to flips: for held-out documents of the rule-scored toy
tasks it takes the next-token distribution at the first answer position of the
full-precision model and of each quantized model (same weights, the recipe's
dequantized weights in place, fp32 activations so only weight quantization
differs) and reports

* ``KL``: mean / median / 95th percentile of KL(P_fp32 || P_quant) in nats,
* ``top-1 agree``: share of documents whose greedy first token is unchanged,
* ``KL vs RTN``: the recipe's mean KL over RTN's at the same bits and group size.

It also prints, for every Linear of the language model, how uneven its input
channels are (max / median of the per-channel mean ``|x|`` on the same
documents): AWQ protects the few channels with large activations, so it can
only gain where a few channels stand far above the rest, as outlier channels
do in billion-parameter LLMs (the premise of AWQ and LLM.int8()).

Searched scales are cached under ``--quant-cache`` (the same cache as
``harness run --quant-cache``)::

    python benchmarks/quant_divergence.py --n 600 --out quant-divergence.md

Any registered model and task works the same way; on a GPU, for example::

    python benchmarks/quant_divergence.py --model llava-1.5-7b --device cuda --dtype fp16 \
        --tasks gqa,pope --data-root /data --calib-tasks gqa \
        --recipes rtn-w4g128,awq-w4g128,gptq-w4g128

The reference log-probabilities are taken first; each recipe's dequantized
weights are then written into the same model and the originals put back from
a CPU copy, so the device holds one model.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from toy_leaderboard import RECIPES  # the leaderboard's rows (benchmarks/, next to this)

from harness.cli.common import setup_logging
from harness.models.loading import load_model
from harness.quantizers.calibration_data import task_requests
from harness.quantizers.divergence import channel_unevenness, divergence_rows

TASKS = "pope_random-toy,gqa-toy,vqav2-toy,textvqa-toy,mme-toy,scienceqa-toy,mmbench-toy"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-llava")
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--data-root", type=Path, default=None, help="for real benchmarks")
    parser.add_argument("--n", type=int, default=400, help="documents, spread over the tasks")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument(
        "--calib-tasks", default="", help="image+text calibration documents (real models)"
    )
    parser.add_argument("--quant-cache", default="quant-cache")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", help="activations (fp32: weights alone)")
    parser.add_argument("--seed", type=int, default=0, help="which documents are drawn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging()

    adapter = load_model(
        args.model, model_path=args.model_path, device=args.device, dtype=args.dtype
    )
    requests = task_requests(
        adapter, args.tasks.split(","), args.n, args.seed, data_root=args.data_root
    )
    rows = divergence_rows(
        adapter,
        requests,
        [r for r in args.recipes.split(",") if r],
        calib_tasks=tuple(t for t in args.calib_tasks.split(",") if t),
        data_root=args.data_root,
        cache_dir=args.quant_cache,
    )
    uneven = channel_unevenness(adapter, requests[:64])
    kinds: dict[str, list[float]] = {}
    for name, ratio in uneven.items():
        kinds.setdefault(name.rsplit(".", 1)[-1], []).append(ratio)
    lines = [
        "input channels, max / median of mean |x| over the layers: "
        + ", ".join(f"{k} {min(v):.1f}-{max(v):.1f}" for k, v in kinds.items()),
        "",
        f"{args.model}, {len(requests)} documents of {args.tasks}, first answer token, "
        f"KL({args.dtype} || quantized) in nats",
        "",
        "| recipe | KL mean | KL median | KL p95 | top-1 agree % | KL vs RTN |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "" if math.isnan(r.vs_rtn) else f"{r.vs_rtn:.2f}"
        lines.append(
            f"| {r.recipe} | {r.kl_mean:.4f} | {r.kl_median:.5f} | {r.kl_p95:.4f} "
            f"| {r.agree:.1f} | {ratio} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
