"""Training floats that do not depend on the CPU's instruction set (``harness train --portable``).

MKL, oneDNN and torch's own vectorised kernels each pick a code path by CPU (AVX2,
AVX-512, AMX ...), and each path sums in its own order, so the same training run writes
other weights on another kind of CPU (docs/research/bit-for-bit.md). Pinning all three to their
AVX2 paths makes the floats those of any AVX2 CPU with the same thread count: MKL's
conditional numerical reproducibility mode (``MKL_CBWR``), torch's dispatch
(``ATEN_CPU_CAPABILITY``) and oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``). The libraries
read these when they load, so they must be in the environment before Python starts;
the CLI re-executes itself with them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

PORTABLE_ENV: dict[str, str] = {
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# every variable that moves these libraries' code paths (recorded when set)
ISA_VARIABLES: tuple[str, ...] = (*PORTABLE_ENV, "MKL_ENABLE_INSTRUCTIONS")


def isa_pins(environ: Mapping[str, str] = os.environ) -> str:
    """The ISA variables set in ``environ``, e.g. ``"MKL_CBWR=AVX2 ..."`` ("" for none)."""
    return " ".join(f"{k}={environ[k]}" for k in ISA_VARIABLES if environ.get(k))


def portable_active(environ: Mapping[str, str] = os.environ) -> bool:
    return all(environ.get(k) == v for k, v in PORTABLE_ENV.items())


# The re-run's entry point. Not ``python -m``, which puts the working directory first on
# sys.path: run from a checkout, its top-level kernels/ would shadow Hugging Face's
# ``kernels`` package that transformers imports.
_ENTRY = (
    "import sys; sys.path[:] = [p for p in sys.path if p != '']; "
    "from harness.cli import main; sys.exit(main(sys.argv[1:]))"
)


def harness_command(argv: Sequence[str]) -> list[str]:
    """``harness ARGV`` as a command line for this Python."""
    return [sys.executable, "-c", _ENTRY, *argv]


def reexec_portable(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``harness ARGV`` under :data:`PORTABLE_ENV`."""
    command = harness_command(argv)
    os.execve(command[0], command, {**os.environ, **PORTABLE_ENV})
