"""toy-llava trained from scratch with recipe settings changed, then scored on every toy task.

Each ``--set`` changes one field of the shipped recipe (as in ``stage3_seeds.py``;
``model.FIELD`` and ``vision.FIELD`` reach into the model spec and the
vision-pretraining config). The model is trained by the same code as
``harness train`` (stage checkpoints are kept in ``--out``, so an interrupted run
resumes), then scored with ``harness run`` on the rule-scored toy tasks. This is the
docs/research/toy-llava-training.md's table of step counts against quality ("Why it is not a few minutes")::

    python experimental/train_recipe.py --out q10 --set vision.steps=700 \\
        --set align_steps=700 --set instruct_steps=3000 --set mc_steps=3000 \\
        --set mc_cooldown_steps=600
    python experimental/train_recipe.py --out p32 --set model.patch_size=32

``--from DIR`` first copies the stage checkpoints of an earlier run kept in DIR
(``harness train --keep-stages``, or this script's ``--out``); the stages whose recipe
fields are unchanged are then not trained again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from stage3_seeds import COLUMNS, parse_settings, print_table, score

from harness.trainers.recipes import train_toy_llava
from harness.trainers.stage_checkpoints import STAGES_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="model folder to write")
    parser.add_argument("--set", action="append", default=[], help="recipe FIELD=VALUE")
    parser.add_argument("--from", dest="source", type=Path, help="copy stage checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = parse_settings(args.set)
    if args.source is not None:
        if not (args.source / STAGES_DIR).is_dir():
            raise SystemExit(
                f"--from {args.source}: no {STAGES_DIR}/ folder (keep one with "
                "harness train --keep-stages, or a previous --out of this script)"
            )
        for stage in sorted((args.source / STAGES_DIR).iterdir()):
            target = args.out / STAGES_DIR / stage.name
            if not target.exists():
                shutil.copytree(stage, target)
    stats = train_toy_llava(args.out, seed=args.seed, recipe=recipe, keep_stages=True, log=None)
    seconds = {s["name"]: s.get("seconds", 0.0) for s in stats["stages"]}
    values = score(args.out)
    stages = " / ".join(f"{seconds[name]:.0f}" for name in seconds)
    print(f"settings: {' '.join(args.set) or '(shipped recipe)'}")
    print(f"stage seconds ({' / '.join(seconds)}): {stages}")
    print_table(
        ["train s"],
        [[f"{stats['train_seconds']:.1f}"] + [f"{values[k]:.1f}" for k in COLUMNS.values()]],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
