"""Anchors of the audit chain outside the database: its head (sequence and hash) written to a file now and then.

Deleting the last entries of the chain leaves a chain that verifies by itself; only a head remembered
elsewhere shows the tail is gone. A running server (server/audit/watch.py) appends the head to `audit_anchor_file` every
`audit_anchor_interval_s` and `amtrace-server audit anchor` does it on demand; `audit verify` then checks that
every anchored head is still in the chain. The file is plain JSON lines so an operator can mail or copy it to
another system (a write-once store is better still); each line also carries the fingerprint of the audit key,
so a verifier holding the wrong key is told so instead of seeing every entry "altered".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import AuditEntry, utcnow


def key_fingerprint(key: str) -> str:
    """A short public fingerprint of the audit key (an HMAC of a fixed text: it reveals nothing of the key)."""
    return hmac.new(key.encode(), b"amtrace audit key fingerprint", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Anchor:
    """One remembered head of the chain."""

    at: str
    seq: int
    hash: str
    key_fingerprint: str
    line: int


def write_anchor(session: Session, path: str | Path, key: str) -> Anchor | None:
    """Append the chain's current head to the anchor file; None while the chain is empty."""
    row = session.execute(select(AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq.desc())
                          .limit(1)).first()
    if row is None:
        return None
    anchor = {"at": utcnow().isoformat(timespec="seconds"), "seq": row.seq, "hash": row.entry_hash,
              "key_fingerprint": key_fingerprint(key)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() of a short line with O_APPEND: lines of several server processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (json.dumps(anchor, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Anchor(line=0, **anchor)


def read_anchors(path: str | Path) -> tuple[list[Anchor], list[str]]:
    """The anchors in the file and a problem for each line that is not one (a missing file has none)."""
    anchors, problems = [], []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            anchors.append(Anchor(at=str(d["at"]), seq=int(d["seq"]), hash=str(d["hash"]),
                                  key_fingerprint=str(d.get("key_fingerprint", "")), line=n))
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"anchor file {path} line {n} is not an anchor ({e.__class__.__name__})")
    return anchors, problems


def anchored_time(anchor: Anchor) -> str:
    """The anchor's time for messages (the stored ISO text when it does not parse)."""
    try:
        return datetime.fromisoformat(anchor.at).strftime("%d %b %Y %H:%M UTC")
    except ValueError:
        return anchor.at
