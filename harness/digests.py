"""Content digests (sha256 of every byte) of weight and data files, computed once per file version.

A cached output may be reused only for the same bytes, so model fingerprints
and task hashes are built from full sha256 digests. Hashing a 7B checkpoint
takes seconds to minutes, so a digest is computed at most once per version
of a file:

* a file in the Hugging Face cache whose blob is named by its sha256 (LFS
  files: ``blobs/<64 hex digits>``) already carries its digest;
* otherwise the digest is stored in a small SQLite table keyed by the real
  path, size, ``st_mtime_ns``, inode and ``st_ctime_ns`` (which, unlike the
  mtime, cannot be set back by a copy tool): rewriting, replacing or touching
  the file gives a new key, and it is hashed again.

The table lives in ``$HARNESS_CACHE_DIR`` (default ``~/.cache/vlm-harness``);
when it cannot be written, digests are simply computed every time.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads
ENV_DIR = "HARNESS_CACHE_DIR"
DB_NAME = "file-digests.db"
_HF_BLOB = re.compile(r"^[0-9a-f]{64}$")

# Counters a caller (a test, a benchmark) can read: how each digest was obtained.
stats = {"hashed_files": 0, "hashed_bytes": 0, "cached": 0, "hf_blob": 0}


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or Path.home() / ".cache" / "vlm-harness")


def sha256_file(path: Path) -> str:
    """Streamed sha256 of every byte of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        view = memoryview(bytearray(CHUNK))
        while n := fh.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def hf_blob_digest(path: Path) -> str | None:
    """The sha256 a Hugging Face cache blob is named by (LFS files), else None."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _HF_BLOB.match(real.name):
        return real.name
    return None


def _connect() -> sqlite3.Connection | None:
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(folder / DB_NAME, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute(
            "create table if not exists digests (path text, size integer, mtime_ns integer, "
            "inode integer, ctime_ns integer, sha256 text, "
            "primary key (path, size, mtime_ns, inode, ctime_ns))"
        )
        return conn
    except (OSError, sqlite3.Error):
        return None


def _key(path: Path) -> tuple[str, int, int, int, int]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return (real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _lookup(conn: sqlite3.Connection | None, key: tuple) -> str | None:
    if conn is None:
        return None
    try:
        row = conn.execute(
            "select sha256 from digests where path = ? and size = ? and mtime_ns = ? "
            "and inode = ? and ctime_ns = ?",
            key,
        ).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def known_digest(path: Path | str) -> str | None:
    """The digest of ``path`` if it is known without reading the file, else None."""
    path = Path(path)
    blob = hf_blob_digest(path)
    if blob is not None:
        return blob
    conn = _connect()
    try:
        return _lookup(conn, _key(path))
    finally:
        if conn is not None:
            conn.close()


def file_digest(path: Path | str) -> str:
    """sha256 hex digest of ``path``'s bytes, from the HF blob name or the digest table if known."""
    path = Path(path)
    known = hf_blob_digest(path)
    if known is not None:
        stats["hf_blob"] += 1
        return known
    key = _key(path)
    conn = _connect()
    try:
        cached = _lookup(conn, key)
        if cached is not None:
            stats["cached"] += 1
            return cached
        real, size, mtime_ns, _, ctime_ns = key
        digest = sha256_file(Path(real))
        stats["hashed_files"] += 1
        stats["hashed_bytes"] += size
        after = os.stat(real)
        unchanged = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            size,
            mtime_ns,
            ctime_ns,
        )
        if conn is not None and unchanged:
            try:  # a file changed while it was read is not recorded
                conn.execute(
                    "insert or replace into digests values (?, ?, ?, ?, ?, ?)", (*key, digest)
                )
            except sqlite3.Error:
                pass
        return digest
    finally:
        if conn is not None:
            conn.close()
