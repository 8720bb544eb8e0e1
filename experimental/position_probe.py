"""Linear probes on a trained toy model's image tokens: where does position get lost?

Renders training-world scenes, takes the frozen model's image features at two points
(the vision tower's patch features LLaVA consumes, and the projector's output the
language model reads), and fits linear classifiers on 80% of the scenes, scoring the
other 20%:

- which of the patches a single patch feature comes from (is absolute place kept?);
- the shape and the colour in each grid cell, from all patches together (is content
  kept, in the right place of the sequence?).

    python experimental/position_probe.py [--model-path DIR] [--scenes 3000]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from torch import nn
from transformers import AutoProcessor, LlavaForConditionalGeneration

from harness.tasks.toy.world import COLORS, SHAPES, Scene, sample_scene
from harness.trainers.llava_stages import vision_features

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "weights" / "toy-llava"


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear classifier fitted (Adam, full batch) on the first 80%."""
    n = int(0.8 * len(x))
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
    x = (x - mean) / std
    linear = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(linear(x[:n]), y[:n]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((linear(x[n:]).argmax(-1) == y[n:]).float().mean())


def cell_labels(scenes: list[Scene], attribute: str) -> tuple[torch.Tensor, int]:
    """[scenes, 4] class per grid cell: 0 empty, else 1 + index of the shape or colour."""
    values = list(SHAPES) if attribute == "shape" else list(COLORS)
    y = torch.zeros(len(scenes), 4, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            y[i, obj.cell] = 1 + values.index(getattr(obj, attribute))
    return y, 1 + len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(SHIPPED))
    parser.add_argument("--scenes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    path = args.model_path
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    rng = random.Random(args.seed)
    scenes = [sample_scene(rng, False) for _ in range(args.scenes)]
    pixels = processor.image_processor(images=[s.render() for s in scenes], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        tower = torch.cat([vision_features(model, p) for p in pixels.split(500)])
        projected = torch.cat([model.model.multi_modal_projector(t) for t in tower.split(500)])
    print(f"{path}: {args.scenes} training-world scenes, 80/20 split, held-out accuracy")
    print("| features | patch index from its own feature | shape per cell | colour per cell |")
    print("|---|---:|---:|---:|")
    for name, feats in (("vision tower patches", tower), ("projector output", projected)):
        b, p, d = feats.shape
        where = probe_accuracy(feats.reshape(b * p, d), torch.arange(p).repeat(b), p)
        cells = {}
        for attribute in ("shape", "color"):
            y, classes = cell_labels(scenes, attribute)
            accs = [probe_accuracy(feats.reshape(b, p * d), y[:, c], classes) for c in range(4)]
            cells[attribute] = f"{100 * min(accs):.1f}-{100 * max(accs):.1f}"
        print(
            f"| {name} | {100 * where:.1f} (chance {100 / p:.1f}) "
            f"| {cells['shape']} | {cells['color']} |"
        )


if __name__ == "__main__":
    main()
