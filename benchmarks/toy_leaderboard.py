"""The toy model's FP16 vs INT4 leaderboard, in one command.

Runs ``harness run --model toy-llava`` at FP16 and under every quant recipe on
all rule-scored toy tasks into one results DB, then prints the leaderboard
with the drops against FP16 (and writes it to ``--out`` as markdown)::

    python benchmarks/toy_leaderboard.py --db toy-leaderboard.db --out toy-leaderboard.md

Runs already in the DB are reused (same fingerprint, task and generation
kwargs), and searched scales are cached under ``--quant-cache``.
"""

from __future__ import annotations

import argparse
import sys
import time

from harness.cli import main as harness

# Calibration: 32 image+text samples from the synthetic world's training scenes (what the
# model sees at evaluation; none of the evaluated scenes). The last recipe calibrates AWQ on
# text only (32 x 256 tokens of the world's texts), to show what that costs a VLM.
RECIPES = [
    "rtn-w4g128",
    "awq-w4g128-image_text-n32",
    "autoround-w4g128-image_text-n32",
    "gptq-w4g128-image_text-n32",
    "rtn-w3g128",
    "awq-w3g128-image_text-n32",
    "autoround-w3g128-image_text-n32",
    "gptq-w3g128-image_text-n32",
    "awq-w3g128-n32-s256",
    # W2 G64: below the W3, where this model's RTN finally loses accuracy
    "rtn-w2g64",
    "awq-w2g64-image_text-n32",
    "autoround-w2g64-image_text-n32",
    "gptq-w2g64-image_text-n32",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="toy-leaderboard.db")
    parser.add_argument("--out", default="toy-leaderboard.md")
    parser.add_argument(
        "--tasks",
        default="pope-toy,gqa-toy,vqav2-toy,textvqa-toy,textvqa_noocr-toy,scienceqa-toy,"
        "mme-toy,mmbench-toy",
        help="the rule-scored toy tasks (the pope-toy group adds its mean F1)",
    )
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--quant-cache", default="quant-cache")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", default="16")
    args = parser.parse_args()

    common = ["--model", "toy-llava", "--tasks", args.tasks, "--db", args.db]
    common += ["--device", args.device, "--batch-size", args.batch_size, "--bootstrap", "200"]
    recipes = [r for r in args.recipes.split(",") if r]
    for quant in ["fp16", *recipes]:
        start = time.perf_counter()
        extra = ["--quant", quant] + ([] if quant == "fp16" else ["--dtype", "fp16"])
        extra += ["--quant-cache", args.quant_cache] if quant != "fp16" else []
        code = harness(["run", *common, *extra, "--json"])
        if code:
            return code
        print(f"{quant}: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return harness(
        ["leaderboard", "--db", args.db, "--base", "fp16", "--out", args.out]
    ) or harness(["leaderboard", "--db", args.db, "--base", "fp16"])


if __name__ == "__main__":
    sys.exit(main())
