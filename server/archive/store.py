"""Where device archives are kept: one small interface, a directory by default.

An archive is written once and never changed: a key that exists is never overwritten, and every file is made
read-only. The same keys (`<device code>/<archive id>/<name>`) map one to one onto object names in a bucket
with object lock in compliance mode (S3 Object Lock, Azure immutable blobs, GCS bucket lock): an
implementation of `ArchiveStore` with put = PUT with a retain-until date and If-None-Match: *, get = GET
(docs/decisions.md "Device archives")."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Protocol

from server.errors import Conflict, NotFound


class ArchiveStore(Protocol):
    """Write-once storage of archive files by key."""

    def put(self, key: str, data: bytes) -> None:
        """Store data under a new key; refuse a key that exists."""

    def get(self, key: str) -> bytes:
        """The bytes stored under key (NotFound when absent)."""

    def location(self, key: str) -> str:
        """Where a key lives, for people (a path or a URL)."""


def _checked_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ValueError(f"archive key {key!r} is not a plain relative name")
    return p


class DirectoryStore:
    """Archives as read-only files under a directory (fsynced, created exclusively)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file a key is kept in."""
        return self.root.joinpath(*_checked_key(key).parts)

    def put(self, key: str, data: bytes) -> None:
        """Create the file exclusively, write, fsync, make it read-only."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise Conflict(f"archive file {path} exists: archives are written once", code="archive_exists") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, 0o444)

    def get(self, key: str) -> bytes:
        """The file's bytes."""
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"archive file {path} is missing", code="archive_file_missing") from None

    def location(self, key: str) -> str:
        """The file's path."""
        return str(self.path(key))


def store_of(settings) -> ArchiveStore:
    """The archive store the settings name (a directory: AMTRACE_ARCHIVE_DIR, default <file store>/archives)."""
    return DirectoryStore(settings.archive_dir or Path(settings.file_store) / "archives")
