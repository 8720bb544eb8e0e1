"""How long toy-llava's LLaVA stages would take if the CPU did nothing but their matrix products.

For each LLaVA stage of the shipped recipe (alignment, instruction tuning, multiple
choice) the script encodes a sample of the stage's examples to count tokens and images
per example, then times, on this machine, the matrix products of one training step
of the language model and projector at that many tokens (forward, and the backward's
input and weight gradients, through every Linear of the decoder and the projector;
the frozen tower's forward is timed too). The floor of a stage is its step count times
that time. Padding, attention, norms, activations, the optimizer and Python are
left out, so the floor is a lower bound. It is printed next to the stage's measured
time in a ``training.json`` (``--training``, default: the shipped model's).

    python experimental/train_floor.py --sample 1500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness.tasks.toy import training as toy_data
from harness.trainers.recipes import TOY_LLAVA, encoded_stage, machine_description
from harness.trainers.toy_model import build_model, build_processor, build_tokenizer

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "weights" / "toy-llava"


def linear_shapes(model: torch.nn.Module) -> dict[str, list[tuple[int, int]]]:
    """(in, out) of every Linear in the decoder + LM head, the projector and the tower."""
    inner = model.model
    parts = {
        "language": [inner.language_model],
        "projector": [inner.multi_modal_projector],
        "tower": [inner.vision_tower],
    }
    return {
        name: [
            (m.in_features, m.out_features)
            for module in modules
            for m in module.modules()
            if isinstance(m, torch.nn.Linear)
        ]
        for name, modules in parts.items()
    }


def patch_embedding_macs(model: torch.nn.Module) -> int:
    """Multiply-adds of the tower's patch-embedding convolutions for one image."""
    size = model.config.vision_config.image_size
    total = 0
    for m in model.model.vision_tower.modules():
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            positions = (size // m.stride[0]) * (size // m.stride[1])
            total += positions * m.in_channels * kh * kw * m.out_channels
    return total


def matmul_seconds(shapes: list[tuple[int, int]], rows: int, backward: bool, repeats: int) -> float:
    """Best time of the products of ``rows`` tokens through Linears of these shapes."""
    operands = [(torch.randn(rows, i), torch.randn(o, i), torch.randn(rows, o)) for i, o in shapes]

    def once() -> None:
        for x, w, grad in operands:
            torch.mm(x, w.t())  # forward
            if backward:
                torch.mm(grad, w)  # input gradient
                torch.mm(grad.t(), x)  # weight gradient

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=1500, help="examples encoded per stage")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--training", type=Path, default=SHIPPED / "training.json")
    args = parser.parse_args()
    recipe = TOY_LLAVA
    torch.set_num_threads(recipe.threads)
    data = toy_data
    tokenizer = build_tokenizer(data.vocabulary_texts())
    processor = build_processor(tokenizer, recipe.model)
    model = build_model(tokenizer, recipe.model, seed=0)
    shapes = linear_shapes(model)
    patches = recipe.model.image_seq_length + 1  # the tower also runs the CLS token
    recorded = {s["name"]: s for s in json.loads(args.training.read_text())["stats"]["stages"]}
    machine = machine_description()
    print(
        f"machine: {machine['cpu']}, {machine['torch_cpu_capability']}, {machine['threads']} threads"
    )
    print("| stage | steps | tokens / example | images / example | floor s | measured s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    floor_total = measured_total = 0.0
    notes: list[str] = []
    for index, stage in enumerate(recipe.stages()):
        encoded = encoded_stage(recipe, data, processor, tokenizer, stage, seed=index)
        examples = encoded.take(range(min(args.sample, len(encoded))))
        tokens = sum(len(e) for e in examples) / len(examples)
        images = sum(len(e.pixel_values) for e in examples) / len(examples)
        batch = stage.batch_size
        step = matmul_seconds(shapes["language"], round(batch * tokens), True, args.repeats)
        rows = round(batch * images * recipe.model.image_seq_length)
        step += matmul_seconds(shapes["projector"], rows, True, args.repeats)
        step += matmul_seconds(shapes["tower"], round(batch * images * patches), False, 5)
        floor = stage.steps * step
        # multiply-adds: the tower's forward per image, against the trained parts' forward
        # and backward (3x the forward) per example
        tower_macs = patches * sum(i * o for i, o in shapes["tower"]) + patch_embedding_macs(model)
        trained_macs = 3 * (
            tokens * sum(i * o for i, o in shapes["language"])
            + images * recipe.model.image_seq_length * sum(i * o for i, o in shapes["projector"])
        )
        notes.append(
            f"{stage.name}: tower forward {tower_macs / 1e6:.1f} M multiply-adds per image "
            f"(Linears and patch embedding), decoder + projector forward and backward {trained_macs / 1e6:.0f} M "
            "per example"
        )
        measured = recorded.get(stage.name, {}).get("seconds", float("nan"))
        floor_total += floor
        measured_total += measured
        print(
            f"| {stage.name} | {stage.steps} | {tokens:.1f} | {images:.2f} | {floor:.0f} | "
            f"{measured:.0f} | {measured / floor:.2f} |"
        )
    print(
        f"| all LLaVA stages | | | | {floor_total:.0f} | {measured_total:.0f} | "
        f"{measured_total / floor_total:.2f} |"
    )
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
