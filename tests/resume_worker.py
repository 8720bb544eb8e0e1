"""Resume-test helpers: a stand-in model and a script that evaluates POPE into a results DB.

Run as a script (``python tests/resume_worker.py DB DATA_ROOT --delay S``) it is
the process that ``test_resume`` kills with SIGKILL part-way through.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.api.model import VisionLanguageModel
from harness.api.requests import Request
from harness.evaluator import EvalConfig, evaluate
from harness.results.store import ResultsStore

TASK = "pope_random"


class QuestionModel(VisionLanguageModel):
    """Answers from the question text alone: 'Yes' when the object's name has an odd length.

    ``generated`` counts the requests it answered; ``delay`` sleeps once per batch.
    """

    family = "llava"

    def __init__(
        self, name: str = "question-model", version: str = "1", delay: float = 0.0
    ) -> None:
        self.name = name
        self.version = version
        self.delay = delay
        self.generated: list[str] = []

    def fingerprint(self) -> str:
        return f"{self.name}:v{self.version}"

    def generate(self, requests: Sequence[Request]) -> list[str]:
        if self.delay:
            time.sleep(self.delay)
        out = []
        for r in requests:
            question = r.prompt.split("\n")[0]
            obj = question.removeprefix("Is there a ").removesuffix(" in the image?")
            out.append("Yes, there is." if len(obj) % 2 else "No, there is not.")
            self.generated.append(r.doc_id)
        return out


def run(db: Path, data_root: Path, delay: float = 0.0, batch_size: int = 2) -> None:
    store = ResultsStore(db)
    evaluate(
        TASK,
        QuestionModel(delay=delay),
        store,
        EvalConfig(data_root=data_root, batch_size=batch_size, n_boot=0, show_progress=False),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("data_root", type=Path)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per batch")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    run(args.db, args.data_root, args.delay, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
