"""What the full-byte weights fingerprint costs: sha256 GB/s, first run and later runs.

The results cache is keyed by the sha256 of every byte of a model's weight files
(:mod:`harness.digests`). This script writes a file of ``--gb`` GB of random bytes
and measures, in one process:

* sha256 over an in-memory buffer (the hash alone);
* :func:`harness.digests.file_digest` on the new file (read + hash: a model's first
  run), with the file in the page cache as it is right after a download;
* the same call again (a later run: the digest comes from the digest table);

and projects the first-run cost of a 7B and a 13B fp16 checkpoint (13.5 and 26.0 GB).
A file in the Hugging Face cache whose blob is named by its sha256 costs nothing.

    python benchmarks/bench_hashing.py --gb 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from harness import digests
from harness.trainers.recipes import machine_description

CHECKPOINTS_GB = {"7B fp16": 13.5, "13B fp16": 26.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the test file (GB)")
    parser.add_argument("--dir", help="folder for the test file (default: a temp folder)")
    args = parser.parse_args()

    size = int(args.gb * 1e9)
    chunk = os.urandom(1 << 24)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.environ[digests.ENV_DIR] = str(Path(tmp) / "cache")
        path = Path(tmp) / "weights.bin"
        with path.open("wb") as fh:
            written = 0
            while written < size:
                fh.write(chunk[: min(len(chunk), size - written)])
                written += min(len(chunk), size - written)

        start = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(max(1, size // len(chunk))):
            h.update(chunk)
        memory_s = time.perf_counter() - start
        memory_gbs = (max(1, size // len(chunk)) * len(chunk)) / memory_s / 1e9

        start = time.perf_counter()
        first = digests.file_digest(path)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = digests.file_digest(path)
        again_s = time.perf_counter() - start
        assert first == again

    file_gbs = size / first_s / 1e9
    result = {
        "machine": machine_description(),
        "file_gb": size / 1e9,
        "sha256_in_memory_gb_per_s": round(memory_gbs, 2),
        "first_run_file_gb_per_s": round(file_gbs, 2),
        "first_run_s": round(first_s, 2),
        "later_run_ms": round(1000 * again_s, 2),
        "projected_first_run_s": {k: round(gb / file_gbs, 1) for k, gb in CHECKPOINTS_GB.items()},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
