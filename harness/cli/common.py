"""What the sub-commands share: the flag parser and its checks, the results DB, judges,
JSON output, and the report of incomplete scores that decides the exit status.

Exit status (also in the README): 0 scores complete; 1 ``harness gate`` failed;
2 a usage or input error (nothing was scored, or the results could not be
stored); 3 scores were computed and printed but are incomplete (documents
without an answer, or failed judgements) and ``--allow-missing`` was not given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from harness.console import emit, error, warn
from harness.errors import EXIT_INCOMPLETE, EXIT_USAGE, HarnessError

DEFAULT_DB = "harness-results.db"
SHOWN = 5


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        error(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_USAGE)


# -- flag types ------------------------------------------------------------------------------
def _whole_number(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a whole number >= {low}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: expected a whole number >= {low}")
        return value

    return parse


positive_int = _whole_number(1)
non_negative_int = _whole_number(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number")
    return value


def probability(text: str) -> float:
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a level between 0 and 1")
    return value


def parse_data_files(items: list[str] | None, tasks: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--data-file TASK:ROLE=PATH`` flags -> task -> role -> path (TASK one of ``tasks``)."""
    data_files: dict[str, dict[str, str]] = {}
    for item in items or []:
        task, sep, rest = item.partition(":")
        if not sep or task not in tasks:
            raise HarnessError(
                f"--data-file {item!r}: expected TASK:ROLE=PATH with TASK one of {list(tasks)}"
            )
        data_files.setdefault(task, {}).update(kv_list([rest], "--data-file"))
    return data_files


def add_gen_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gen",
        action="append",
        metavar="KEY=VALUE",
        help="override a generation setting of the model's eval profile and the task "
        "(max_new_tokens, min_new_tokens, temperature, top_p, num_beams, do_sample, seed, "
        "stop); e.g. --gen temperature=0 for greedy decoding where the authors sampled",
    )


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def gen_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--gen KEY=VALUE`` flags, checked against the generation settings adapters know."""
    from harness.api.requests import check_gen_kwargs

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--gen {item!r}: expected KEY=VALUE (e.g. --gen max_new_tokens=16)")
        out[key.strip()] = json_value(value.strip())
    try:
        return check_gen_kwargs(out, "--gen")
    except ValueError as exc:
        raise HarnessError(str(exc)) from None


def kv_list(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise HarnessError(
                f"{flag} {item!r}: expected ROLE=PATH (e.g. {flag} questions=llava_pope_test.jsonl)"
            )
        out[key.strip()] = value.strip()
    return out


def overrides_per_task(tasks: list[Any], overrides: dict[str, str]) -> dict[str, dict[str, str]]:
    """Apply each ``--data-file ROLE=PATH`` to every task of a group that has that role."""
    out: dict[str, dict[str, str]] = {t.name: {} for t in tasks}
    for role, path in overrides.items():
        owners = [t for t in tasks if role in t.config.dataset.files]
        if not owners:
            roles = sorted({r for t in tasks for r in t.config.dataset.files})
            raise HarnessError(
                f"--data-file {role}=...: no task here has the role {role!r}; roles: {roles}"
            )
        for t in owners:
            out[t.name][role] = path
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


# -- output ----------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def emit_json(value: Any, **kwargs: Any) -> None:
    """Valid JSON on stdout: NaN becomes null."""
    emit(json.dumps(finite(value), indent=2, allow_nan=False, **kwargs))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging() -> None:
    """Library progress lines (``harness.*`` loggers: loading, hashing, quantizing) on stderr."""
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# -- results DB ------------------------------------------------------------------------------
def db_path(args: argparse.Namespace) -> Path:
    return Path(args.db or os.environ.get("HARNESS_DB") or DEFAULT_DB)


def open_store(args: argparse.Namespace, must_exist: bool = False, write: bool = False) -> Any:
    from harness.results.store import ResultsStore

    path = db_path(args)
    if must_exist and not path.exists():
        raise HarnessError(f"--db {path}: no such results database (set --db or HARNESS_DB)")
    store = ResultsStore(path)
    if write:
        store.require_writable()
    return store


# -- judges ----------------------------------------------------------------------------------
def add_judge_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM judge (VCG, Quilt review, MMBench fallback)")
    g.add_argument(
        "--judge-model",
        help="judge model name (env HARNESS_JUDGE_MODEL; default: the task's official judge)",
    )
    g.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")
    g.add_argument("--judge-api-key", help="API key, never stored (env OPENAI_API_KEY)")
    g.add_argument(
        "--judge-retries",
        type=positive_int,
        default=4,
        help="attempts per judgement (default 4)",
    )


def make_judges(args: argparse.Namespace, tasks: list[Any], store: Any) -> dict[str, Any]:
    """One judge per judge-scored task, each on its official model unless --judge-model is given."""
    base_url = args.judge_base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = args.judge_api_key or os.environ.get("OPENAI_API_KEY")
    judged = [t for t in tasks if t.config.judge is not None]
    if not judged or (not base_url and not api_key):
        return {}
    from harness.judge_client import OpenAIJudge

    override = args.judge_model or os.environ.get("HARNESS_JUDGE_MODEL")
    judges: dict[str, Any] = {}
    by_model: dict[str, Any] = {}
    for task in judged:
        model = override or task.config.judge.model
        if model not in by_model:
            by_model[model] = OpenAIJudge(
                model=model,
                base_url=base_url,
                api_key=api_key or "none",
                store=store,
                max_attempts=args.judge_retries,
            )
        judges[task.name] = by_model[model]
    return judges


def add_allow_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-extra",
        action="store_true",
        help="leave out predictions that belong to no document of the task(s) instead of "
        "refusing the file (e.g. one split of an answer file that holds several)",
    )


def add_allow_missing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0 although some documents have no answer (scored by each task's rule: "
        "left out, or counted wrong; `harness tasks` shows the rule)",
    )


# -- completeness ----------------------------------------------------------------------------
def report_incomplete(
    scores: Mapping[str, Any],
    allow_missing: bool,
    failures: Mapping[str, Mapping[str, str]] | None = None,
) -> int:
    """Say which scores lack answers or judgements (stderr); the exit status they call for."""
    status = 0
    missing_total = 0
    for name, score in scores.items():
        failed = dict((failures or {}).get(name, {}))
        if failed:
            shown = "; ".join(f"{d}: {e}" for d, e in list(failed.items())[:SHOWN])
            warn(
                f"{name}: {len(failed)} samples could not be run (not scored; the next run "
                f"tries them again): {shown}"
            )
        if score.n_missing:
            missing_total += score.n_missing
            how = (
                "counted as wrong"
                if score.missing_rule == "wrong"
                else "left out of the metrics, as the official script scores the answered ones"
            )
            ids = ", ".join(score.missing_ids[:SHOWN])
            more = ", ..." if score.n_missing > SHOWN else ""
            warn(
                f"{name}: {score.n_missing} of {score.n} documents have no answer ({how}): "
                f"{ids}{more}"
            )
        judge_failures = int(score.extra.get("judge_failures", 0) or 0)
        if judge_failures:
            warn(
                f"{name}: {judge_failures} judgements failed (counted, never scored as 0); "
                "run the command again to retry them"
            )
            status = EXIT_INCOMPLETE
    if missing_total and not allow_missing:
        error(
            f"{missing_total} documents have no answer, so the scores above are incomplete "
            "(pass --allow-missing to accept them)"
        )
        status = EXIT_INCOMPLETE
    return status


# -- output ----------------------------------------------------------------------------------
def flat_scores(scores: Any, groups: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ``--json`` object: ``task/metric -> number`` for every task and group."""
    flat: dict[str, Any] = {}
    for score in scores:
        flat.update(score.flat())
    for g, metrics in groups.items():
        flat.update({f"{g}/{k}": v for k, v in metrics.items()})
    return flat
