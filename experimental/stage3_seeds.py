"""toy-llava's stage 3 rerun with other seeds (and recipe settings), scored on every toy task.

Stage 3 (multiple choice) alone is trained from saved stage-2 weights with each
``--seeds`` value as the stage's seed (``harness train --seed 0`` uses 2), then each
result is evaluated with ``harness run`` on the rule-scored toy tasks. This is the
the "depends on the seed" table of docs/research/toy-llava-training.md::

    python experimental/stage3_seeds.py --stage2 s2 --out stage3 --seeds 2,3,4
    python experimental/stage3_seeds.py --stage2 s2 --out stage3-4000 --seeds 2,3,4 \
        --set mc_steps=4000 --set mc_cooldown_steps=800

``--stage2 DIR`` is trained first (stages 0-2 of the shipped recipe, about 13 minutes)
when it holds no model yet. Each stage 3 takes about 9 minutes (6 at 4000 steps) on
2 cores; with seed 2 and no ``--set`` it writes the shipped weights bit for bit (with
the torch and transformers that trained them, on the same kind of CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from harness.cli import main as harness
from harness.tasks.toy import training as toy_data
from harness.trainers.llava_stages import train_stage
from harness.trainers.recipes import (
    TOY_LLAVA,
    ToyLlavaRecipe,
    encoded_stage,
    train_toy_llava,
)

TASKS = "pope-toy,gqa-toy,vqav2-toy,textvqa-toy,textvqa_noocr-toy,mme-toy,scienceqa-toy,mmbench-toy"
COLUMNS = {
    "POPE F1": "pope-toy/f1",
    "GQA": "gqa-toy/accuracy",
    "VQAv2": "vqav2-toy/accuracy",
    "TextVQA": "textvqa-toy/accuracy",
    "no OCR": "textvqa_noocr-toy/accuracy",
    "MME": "mme-toy/perception",
    "SQA": "scienceqa-toy/img_accuracy",
    "MMBench": "mmbench-toy/accuracy",
}


def parse_settings(pairs: list[str]) -> ToyLlavaRecipe:
    """``FIELD=VALUE`` pairs (VALUE as JSON, e.g. 6000, 5e-4 or [["pope", 0.2]]) applied to
    the shipped recipe; ``model.FIELD`` / ``vision.FIELD`` set a field of the model spec or
    of the vision-pretraining config (e.g. ``model.patch_size=32``, ``vision.steps=700``)."""
    recipe = TOY_LLAVA
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"--set {pair}: expected FIELD=VALUE, VALUE as JSON")
        outer, _, inner = name.partition(".")
        nested = getattr(recipe, outer, None) if inner else None
        if inner and is_dataclass(nested):
            if inner not in {f.name for f in fields(nested)}:
                raise SystemExit(f"--set {pair}: {inner!r} is not a field of {outer}")
            recipe = replace(recipe, **{outer: replace(nested, **{inner: json.loads(value)})})
        elif name in {f.name for f in fields(ToyLlavaRecipe)}:
            recipe = replace(recipe, **{name: _as_tuples(json.loads(value))})
        else:
            raise SystemExit(f"--set {pair}: {name!r} is not a ToyLlavaRecipe field")
    return recipe


def _as_tuples(value: object) -> object:
    """JSON lists as the recipe's tuples, e.g. mc_rest_mix=[["pope", 0.2], ["where", 0.1]]."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def score(model_dir: Path) -> dict[str, float]:
    """``harness run`` of the model in ``model_dir`` on the rule-scored toy tasks (no CIs);
    the results DB and ``scores.json`` are written next to the weights."""
    scores = model_dir / "scores.json"
    run = ["run", "--model", "toy-llava", "--model-path", str(model_dir), "--tasks", TASKS]
    run += ["--db", str(model_dir / "results.db"), "--bootstrap", "0", "--batch-size", "16"]
    with scores.open("w") as handle, contextlib.redirect_stdout(handle):
        code = harness([*run, "--json"])
    if code:
        raise SystemExit(f"harness run on {model_dir} failed with exit code {code}")
    return json.loads(scores.read_text())


def print_table(head: list[str], rows: list[list[str]]) -> None:
    """A markdown table: ``head`` columns, then the score columns."""
    print("| " + " | ".join(head + list(COLUMNS)) + " |")
    print("|---" * (len(COLUMNS) + len(head)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage2", required=True, help="stage-2 model folder (made if empty)")
    parser.add_argument("--out", required=True, help="one model folder per seed goes here")
    parser.add_argument("--seeds", default="2,3,4", help="stage-3 seeds")
    parser.add_argument("--set", action="append", default=[], help="recipe FIELD=VALUE")
    args = parser.parse_args()
    recipe = parse_settings(args.set)
    torch.set_num_threads(recipe.threads)
    stage2 = Path(args.stage2)
    if not (stage2 / "model.safetensors").is_file():
        train_toy_llava(stage2, seed=0, recipe=replace(TOY_LLAVA, mc_steps=0))
    data = toy_data
    stage = recipe.stages()[2]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = Path(args.out) / f"seed{seed}"
        model = LlavaForConditionalGeneration.from_pretrained(stage2, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(stage2)
        tokenizer = processor.tokenizer
        start = time.perf_counter()
        encoded = encoded_stage(recipe, data, processor, tokenizer, stage, seed, model=model)
        train_stage(model, encoded, stage, pad_id=tokenizer.pad_token_id, seed=seed, log=None)
        seconds = time.perf_counter() - start
        model.save_pretrained(out)
        processor.save_pretrained(out)
        values = score(out)
        rows.append([str(seed), f"{seconds:.0f}"] + [f"{values[k]:.1f}" for k in COLUMNS.values()])
    print_table(["seed", "stage 3 s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
