"""The ``harness`` command line: run, tasks, models, prompts, score, runs, leaderboard, gate, export.

One module per sub-command (``harness/cli/<command>.py``, each with ``register(sub)``
adding its flags and the function that runs it), plus what they share:
:mod:`harness.cli.common` (flag types, results DB, judges, exit status of incomplete
scores) and :mod:`harness.cli.model_flags` (for the commands that load a model). No
command module imports another. Each sub-command is a thin layer over the library:
parse flags, call one function, print a table (rich) or JSON on stdout; progress, notes
and errors go to stderr (:mod:`harness.console`). A :class:`~harness.errors.HarnessError`
is printed as one line and exits with status 2; scores that are incomplete exit with 3.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from harness import __version__
from harness.cli import (
    export,
    gate,
    leaderboard,
    models,
    prompts,
    quantize,
    run,
    runs,
    score,
    tasks,
    toy_data,
    train,
)
from harness.cli.common import Parser, setup_logging
from harness.console import error, say
from harness.errors import EXIT_USAGE, HarnessError

# in the order `harness --help` lists them
COMMANDS = (
    tasks,
    models,
    prompts,
    train,
    quantize,
    toy_data,
    run,
    score,
    runs,
    leaderboard,
    gate,
    export,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vlm-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return int(args.fn(args) or 0)
    except HarnessError as exc:
        error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted; finished samples are kept in the results DB")
        return 130
