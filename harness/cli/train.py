"""``harness train``: re-create a project-trained model (toy-llava) from its recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.common import emit_json
from harness.console import say
from harness.errors import HarnessError


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="re-create a project-trained model (e.g. toy-llava)")
    p.add_argument("recipe", help="recipe name (toy-llava)")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--restart",
        action="store_true",
        help="ignore the stage checkpoints in OUT/stages (by default a rerun resumes after "
        "the last stage whose checkpoint matches the recipe and seed)",
    )
    p.add_argument(
        "--keep-stages",
        action="store_true",
        help="keep OUT/stages/ (each stage's weights) after the model is saved",
    )
    p.add_argument(
        "--portable",
        action="store_true",
        help="pin MKL, oneDNN and torch to their AVX2 code paths, so that the weights are the "
        "same on any AVX2 CPU (slower; not how the shipped weights were made)",
    )
    p.set_defaults(fn=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from harness.trainers.recipes import RECIPES

    try:
        recipe = RECIPES[args.recipe]
    except KeyError:
        raise HarnessError(
            f"harness train {args.recipe}: unknown recipe; known: {', '.join(sorted(RECIPES))}"
        ) from None

    from harness.models.loading import WEIGHTS_DIR
    from harness.trainers import portable
    from harness.trainers.reproduction import ShippedModel, describe

    if args.portable and not portable.portable_active():
        argv = ["train", args.recipe, "--out", str(args.out), "--seed", str(args.seed)]
        argv += ["--portable"] + ["--restart"] * args.restart + ["--keep-stages"] * args.keep_stages
        say(f"--portable: running again under {portable.isa_pins(portable.PORTABLE_ENV)}")
        portable.reexec_portable(argv)

    # read before training: the run may write over the shipped folder
    shipped = ShippedModel.read(WEIGHTS_DIR / args.recipe)
    stats = recipe(
        Path(args.out),
        seed=args.seed,
        log=say,
        resume=not args.restart,
        keep_stages=args.keep_stages,
    )
    if shipped is not None:
        stats["shipped_comparison"] = report = shipped.compare(Path(args.out))
        say(describe(report, args.recipe))
    emit_json(stats, default=str)
    return 0
