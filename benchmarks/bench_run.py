"""Speed of ``harness run`` on the toy tasks against a plain transformers loop, in one process.

Three measurements on the same model, documents and generation settings:

* ``plain``: a per-sample loop a user would write by hand: build the prompt,
  run the processor, ``model.generate``, decode (no harness code at all);
* ``harness b1``: :func:`harness.evaluator.evaluate` at batch size 1, storing
  every output in a fresh SQLite results DB and scoring (what ``harness run`` does);
* ``harness bN``: the same at a larger batch size.

Reported: harness overhead at batch 1 = (harness b1 time - plain time) / plain
time, and batched throughput relative to batch 1. Each measurement is the best
of ``--repeats`` runs, and the three are interleaved so drift hits all alike; the
median over repeats of each b1 run against the plain run just before it is
reported too (less swayed by one lucky run).

    python benchmarks/bench_run.py --tasks pope_random-toy,gqa-toy --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.evaluator import EvalConfig, evaluate
from harness.media import load_image
from harness.models.images import expand_to_square
from harness.models.loading import load_model
from harness.registry import default_registry
from harness.results.store import ResultsStore
from harness.task import get_task


def requests_for(task_names: list[str], family: str, limit: int | None) -> list:
    out = []
    for name in task_names:
        task = get_task(name)
        docs, _ = task.load_docs(None)
        out += task.build_requests(docs[:limit] if limit else docs, None, family, {})
    return out


@torch.inference_mode()
def plain_loop(model, requests, outputs: list[str] | None = None) -> float:
    """The hand-written baseline: one ``generate`` call per sample."""
    hf, processor = model.model, model.processor
    template = model.template
    mean = processor.image_processor.image_mean
    start = time.perf_counter()
    for r in requests:
        images = [expand_to_square(load_image(v), mean) for v in r.visuals]
        text = template.prompt(r.prompt, ["<image>"] * len(images))
        inputs = processor(images=images, text=text, return_tensors="pt")
        out = hf.generate(
            **inputs,
            max_new_tokens=int(r.gen_kwargs.get("max_new_tokens", 128)),
            do_sample=False,
            num_beams=1,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        text = processor.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        if outputs is not None:
            outputs.append(text.strip())
    return time.perf_counter() - start


def harness_run(model, task_names: list[str], batch_size: int, limit: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "bench.db")
        config = EvalConfig(batch_size=batch_size, limit=limit, n_boot=0, show_progress=False)
        start = time.perf_counter()
        evaluate(task_names, model, store, config)
        seconds = time.perf_counter() - start
        store.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-llava")
    parser.add_argument("--tasks", default="pope_random-toy,gqa-toy")
    parser.add_argument("--limit", type=int, default=None, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu" if not torch.cuda.is_available() else None)
    names = default_registry().expand(args.tasks)
    requests = requests_for(names, model.family, args.limit)
    n = len(requests)
    # Same inputs, same answers: the baseline must compute what the harness computes.
    plain: list[str] = []
    plain_loop(model, requests[:32], plain)
    same = sum(a == b for a, b in zip(plain, model.generate(requests[:32]), strict=True))
    best = {"plain": float("inf"), "b1": float("inf"), "bN": float("inf")}
    paired = []  # overhead of each repeat's b1 run against the plain run just before it
    plain_times = []
    for _ in range(args.repeats):
        plain_s = plain_loop(model, requests)
        plain_times.append(plain_s)
        b1_s = harness_run(model, names, 1, args.limit)
        best["plain"] = min(best["plain"], plain_s)
        best["b1"] = min(best["b1"], b1_s)
        best["bN"] = min(best["bN"], harness_run(model, names, args.batch_size, args.limit))
        paired.append(100 * (b1_s - plain_s) / plain_s)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        + ("GPU " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "model": args.model,
        "tasks": names,
        "samples": n,
        "plain_equals_harness_outputs": f"{same}/32",
        "plain_samples_per_s": n / best["plain"],
        "harness_b1_samples_per_s": n / best["b1"],
        f"harness_b{args.batch_size}_samples_per_s": n / best["bN"],
        "overhead_b1_pct": 100 * (best["b1"] - best["plain"]) / best["plain"],
        "overhead_b1_pct_paired_median": statistics.median(paired),
        "overhead_b1_pct_paired": [round(x, 1) for x in paired],
        "plain_samples_per_s_range": [
            round(n / max(plain_times), 1),
            round(n / min(plain_times), 1),
        ],
        "batched_speedup_vs_b1": best["b1"] / best["bN"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
