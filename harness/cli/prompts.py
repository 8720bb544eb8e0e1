"""``harness prompts``: what each request becomes for a model, without loading its weights.

The documents and requests are built exactly as ``harness run`` builds them
(task data, ``--limit``, the eval profile's per-task generation settings,
``--gen``), then rendered by the profile's chat template
(:func:`harness.models.prompting.render_prompt`, the function every adapter's
``rendered_prompt`` agrees with): the full prompt text as it is tokenized,
before media placeholders are expanded into media tokens, with the media and
their preprocessing and the generation settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.common import (
    add_gen_flag,
    emit_json,
    gen_overrides,
    parse_data_files,
    positive_int,
)
from harness.console import emit


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prompts",
        help="show the prompts, media and generation settings a model gets (no weights loaded)",
    )
    p.add_argument("--model", required=True, help="a registry name (`harness models`)")
    p.add_argument("--tasks", required=True, help="comma-separated tasks, groups or tags")
    p.add_argument("--limit", type=positive_int, help="first N documents of each task")
    p.add_argument("--data-root", type=Path, help="folder holding the benchmarks' official files")
    p.add_argument(
        "--data-file", action="append", metavar="TASK:ROLE=PATH", help="override one data file"
    )
    p.add_argument(
        "--num-frames", type=positive_int, help="frames sampled per video (default per model)"
    )
    add_gen_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object per request (a list)")
    p.set_defaults(fn=cmd_prompts)


def rendered_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    from harness.evaluator import EvalConfig, prepare
    from harness.models.prompting import media_summary, render_prompt
    from harness.models.registry import get_entry
    from harness.registry import default_registry

    entry = get_entry(args.model)
    profile = entry.eval_profile
    names = default_registry().expand(args.tasks)
    frames = args.num_frames or entry.options.get("num_frames")
    config = EvalConfig(
        data_root=args.data_root,
        data_files=parse_data_files(args.data_file, names),
        limit=args.limit,
        gen_overrides=gen_overrides(args.gen),
        num_frames=args.num_frames,
    )
    prepared = prepare(args.tasks, config, entry.family, profile)
    rows = []
    for item in prepared.tasks:
        for request in item.requests:
            row: dict[str, Any] = {
                "task": request.task,
                "doc_id": request.doc_id,
                "prompt": render_prompt(profile, request, frames),
                "media": media_summary(profile, request.visuals, frames),
            }
            if hasattr(request, "gen_kwargs"):
                row["generation"] = dict(request.gen_kwargs)
            else:
                row["continuation"] = request.continuation
            rows.append(row)
    return rows


def cmd_prompts(args: argparse.Namespace) -> int:
    from harness.models.registry import get_entry

    rows = rendered_requests(args)
    if args.json:
        emit_json(rows)
        return 0
    profile = get_entry(args.model).eval_profile
    emit(f"# {args.model}: eval profile {profile.name}, {len(rows)} requests")
    for row in rows:
        emit(f"--- {row['task']} {row['doc_id']}")
        emit(row["prompt"])
        for media in row["media"]:
            settings = ", ".join(f"{k}={v}" for k, v in media["preprocessing"].items())
            emit(f"[{media['kind']}] {media['path']}: {settings}")
        if "generation" in row:
            emit("generation: " + ", ".join(f"{k}={v}" for k, v in row["generation"].items()))
        else:
            emit(f"continuation: {row['continuation']!r}")
    return 0
