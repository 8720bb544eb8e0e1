"""User-facing errors: each names the file, field or flag at fault and what was expected.

The CLI prints a :class:`HarnessError` as one message, without a traceback.
"""

from __future__ import annotations

# Exit status of the command line.
EXIT_OK = 0
EXIT_GATE_FAILED = 1  # harness gate: the candidate lost more than allowed
EXIT_USAGE = 2  # a usage or input error, or results that could not be stored
EXIT_INCOMPLETE = 3  # scores printed, but documents lack answers or judgements failed


class HarnessError(Exception):
    """An error the user can act on."""


class TaskConfigError(HarnessError):
    """A task or group YAML file is malformed."""


class DataFileError(HarnessError):
    """A benchmark data file is missing or malformed."""


class PredictionsError(HarnessError):
    """A predictions file cannot be read or does not fit the task."""


class StoreError(HarnessError):
    """The results database cannot be used as asked."""


class QuantizationError(HarnessError, ValueError):
    """A quantization recipe, its calibration, a cached or dumped search, or a checkpoint
    cannot be used for this model (also a ValueError, for library callers)."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``file.jsonl:12 (field 'label')``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f" (field {field!r})"
    return text
