"""Test doubles: a tiny POPE-format data set and a deterministic stand-in model."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from harness.api.model import VisionLanguageModel
from harness.api.requests import Request

OBJECTS = ["cat", "dog", "car", "tree", "cup", "bus", "kite", "boat", "bird", "sofa"]


def make_pope(root: Path, n: int = 20, split: str = "random", images: bool = True) -> Path:
    """Write ``coco_pope_{split}.json`` (JSON lines) and tiny image files under ``val2014/``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = f"COCO_val2014_{i // 2:012d}.jpg"
        obj = OBJECTS[i % len(OBJECTS)]
        label = "yes" if (i * 7) % 3 else "no"
        lines.append(
            {
                "question_id": i + 1,
                "image": image,
                "text": f"Is there a {obj} in the image?",
                "label": label,
            }
        )
    (root / f"coco_pope_{split}.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if images:
        (root / "val2014").mkdir(exist_ok=True)
        for rec in lines:
            (root / "val2014" / rec["image"]).write_bytes(b"\xff\xd8fake")
    return root


class HashModel(VisionLanguageModel):
    """Answers yes/no from a hash of the prompt: deterministic, about half right."""

    family = "llava"

    def __init__(self, name: str = "hash-model", salt: str = "", delay: float = 0.0) -> None:
        self.name = name
        self.salt = salt
        self.delay = delay
        self.generated: list[str] = []
        self.batch_sizes: list[int] = []

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.name}:{self.salt}".encode()).hexdigest()[:16]

    def generate(self, requests: Sequence[Request]) -> list[str]:
        self.batch_sizes.append(len(requests))
        out = []
        for r in requests:
            if self.delay:
                time.sleep(self.delay)
            digest = hashlib.sha256((self.salt + r.prompt).encode()).digest()[0]
            out.append("Yes, there is." if digest % 2 else "No, there is not.")
            self.generated.append(r.doc_id)
        return out
