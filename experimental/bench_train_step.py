"""Training step time of toy-llava: vision tower per step against cached tower features.

While the vision tower is frozen (stages 1-3 of the toy-llava recipe), each example
can keep its images' tower features instead of their pixels
(``EncodedSamples(image_features=...)``), so the tower runs once per image instead of
once per epoch. This script trains the same instruction batches both ways from the
same initial weights, in one process, alternating the two ``--repeats`` times, and
reports milliseconds per step (best and median), their ratio, the memory each
example keeps, the share of a step's CPU time in ``aten::mm``, and whether the loss curves are identical (they must be: the cache
changes no float).

    python experimental/bench_train_step.py --samples 3000 --steps 60 --repeats 3

Encoding (processor + tower features) happens in the first epoch and is timed apart
from the steps: every example is encoded before the timed steps start.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from functools import partial

import torch

from harness.models.chat import get_template
from harness.tasks.toy import training as toy_data
from harness.trainers import llava_stages as ls
from harness.trainers.recipes import TOY_LLAVA, machine_description, stage_samples
from harness.trainers.toy_model import build_model, build_processor, build_tokenizer


def _nbytes(example: ls.Encoded) -> int:
    tensors = [example.input_ids, example.labels, example.pixel_values, example.image_features]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="instruction samples")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(TOY_LLAVA.threads)
    data = toy_data
    tokenizer = build_tokenizer(data.vocabulary_texts())
    processor = build_processor(tokenizer, TOY_LLAVA.model)
    recipe = replace(TOY_LLAVA, instruct_samples=args.samples)
    stage = replace(recipe.stages()[1], steps=args.steps)
    samples = stage_samples(recipe, data, "instruct", seed=1)
    times: dict[str, list[float]] = {"pixels": [], "cached features": []}
    kept: dict[str, float] = {}
    curves: dict[str, list[list[float]]] = {name: [] for name in times}
    for _ in range(args.repeats):
        for name in times:
            model = build_model(tokenizer, TOY_LLAVA.model, seed=0)
            features = partial(ls.vision_features, model) if name != "pixels" else None
            encoded = ls.EncodedSamples(
                processor, get_template(recipe.template), samples, cache=True,
                image_features=features,
            )  # fmt: skip
            for start in range(0, len(encoded), stage.batch_size):
                encoded.take(range(start, min(start + stage.batch_size, len(encoded))))
            kept[name] = sum(_nbytes(encoded[i]) for i in range(len(encoded))) / len(encoded)
            stats = ls.train_stage(model, encoded, stage, pad_id=tokenizer.pad_token_id, log=None)
            times[name].append(1000 * stats.seconds / stage.steps)
            curves[name].append(stats.losses)
    # where a step's time goes: the matrix products' share, on the last (cached) model
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        ls.train_stage(
            model, encoded, replace(stage, steps=10), pad_id=tokenizer.pad_token_id, log=None
        )
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm_share = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / total
    machine = machine_description()
    print(
        f"machine: {machine['cpu']}, {machine['torch_cpu_capability']}, {machine['threads']} threads"
    )
    print(f"{args.steps} instruction steps at batch {stage.batch_size}, {args.repeats} repeats")
    for name, values in times.items():
        print(f"{name:>16}: best {min(values):.1f} ms/step, median {statistics.median(values):.1f}")
        print(f"{'':>16}  {kept[name] / 1024:.1f} KB kept per example")
    best = min(times["pixels"]) / min(times["cached features"])
    median = statistics.median(times["pixels"]) / statistics.median(times["cached features"])
    print(f"speed-up with cached features: {best:.2f}x (best), {median:.2f}x (median)")
    print(f"aten::mm share of a step's CPU time (torch.profiler, 10 steps): {mm_share:.0%}")
    same = all(c == curves["pixels"][0] for runs in curves.values() for c in runs)
    print(f"identical loss curves: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"{time.perf_counter() - start:.0f} s in all")
    raise SystemExit(code)
