"""Where the command line writes: results on stdout, everything else on stderr.

stdout holds only what a command produces (a table, ``--json``), so it can be
piped and redirected: progress bars, log lines, notes and errors go to stderr.
When stdout is not a terminal, tables are printed whole instead of being cut
to 80 columns. A reader that closes the pipe early (``| head``) ends only the
printing: the command's work (stored results, the exit status) is unaffected.
Messages are printed as plain text, never parsed as console markup, so a
bracketed part such as ``'vlm-harness[plot]'`` survives.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

# Width for stdout when it is not a terminal: tables keep their natural width.
PIPE_WIDTH = 100_000

_stdout_closed = False


class _ResultConsole(Console):
    def on_broken_pipe(self) -> None:
        """rich exits with status 1 here; the command's work is done, so only stop printing."""
        _closed_pipe()


def _stdout() -> Console:
    # Built per call: tests and callers may swap sys.stdout.
    return _ResultConsole(
        file=sys.stdout,
        width=None if sys.stdout.isatty() else PIPE_WIDTH,
        highlight=False,
    )


def stderr() -> Console:
    """The console for progress bars and messages."""
    return Console(file=sys.stderr, highlight=False)


def _closed_pipe() -> None:
    """The reader went away: drop the rest of stdout (and Python's final flush) quietly."""
    global _stdout_closed
    _stdout_closed = True
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file descriptor (e.g. captured in tests)
        pass


def emit(text: str) -> None:
    """Write result text (JSON, CSV, markdown) to stdout."""
    if _stdout_closed:
        return
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _closed_pipe()


def show(renderable: Any) -> None:
    """Print a rich renderable (a results table) to stdout; markup in Text objects is kept."""
    if _stdout_closed:
        return
    try:
        _stdout().print(renderable)
        sys.stdout.flush()
    except BrokenPipeError:
        _closed_pipe()


def say(message: str, style: str | None = None) -> None:
    """A message for the user on stderr (never parsed as markup)."""
    stderr().print(Text(message, style=style or ""), soft_wrap=True)


def warn(message: str) -> None:
    say(message, "yellow")


def error(message: str) -> None:
    """``error: message`` on stderr, the message printed exactly as given."""
    stderr().print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
