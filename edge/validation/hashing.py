"""Streaming SHA-256 of build and design files, in constant memory.

The edge (before a build) and the server (at design approval) both hash files with this code,
so that "the same file" means the same thing on both sides."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Callable

CHUNK = 1 << 20  # 1 MiB: large enough to run at disk/hash speed, small enough to keep memory flat


def sha256_stream(stream: BinaryIO, progress: Callable[[int], None] | None = None) -> str:
    """Return the hex SHA-256 of everything readable from stream; progress(n) gets bytes read so far."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    done = 0
    while True:
        n = stream.readinto(buf)
        if not n:
            break
        digest.update(view[:n])
        done += n
        if progress is not None:
            progress(done)
    return digest.hexdigest()


def sha256_file(path: str | Path, progress: Callable[[int], None] | None = None) -> str:
    """Return the hex SHA-256 of the file at path, read in constant memory."""
    with open(path, "rb", buffering=0) as f:
        return sha256_stream(f, progress)


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of data."""
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """True when value is 64 lowercase or uppercase hex digits."""
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
