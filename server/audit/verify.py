"""`amtrace-server audit verify`: the chain, every signature, every sealed row, every stored file and the anchors.

Apart from the chain service (server.audit.service), which row seals build on: this module reads all of them.
The caller imports server.registry first, so every domain has registered its record hashers and stored files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit import rows
from server.audit.anchors import anchored_time, key_fingerprint, read_anchors
from server.audit.service import GENESIS, STORED_FILES, ChainBreak, check_signature, entry_fields, settings_of
from server.models import AuditEntry, Signature
from server.security import seal


@dataclass
class VerificationReport:
    """Result of verifying the audit chain and every signature."""

    entries_checked: int = 0
    signatures_checked: int = 0
    rows_checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found broken."""
        return not self.breaks


def verify(session: Session, *, expect_head: str | None = None,
           anchor_file: str | None = None) -> VerificationReport:
    """Walk the chain, every signature, every sealed row and stored file; report each place where stored data no
    longer matches (anchor_file: the chain heads written outside the database; default from the settings).

    The caller imports server.registry first, so every domain has registered its record hashers and stored files
    (the API's audit router and the CLI do): this module builds on no domain."""
    settings = settings_of(session)
    key = settings.audit_key
    report = VerificationReport()
    anchors, anchor_problems = read_anchors(anchor_file or settings.anchor_path)
    report.breaks.extend(ChainBreak(None, p) for p in anchor_problems)
    anchored = {a.seq for a in anchors}
    hash_at: dict[int, str] = {}
    seals: dict[tuple[str, str], tuple[str | None, int]] = {}  # (table, pk) -> (sha256 or None, entry seq)
    signed: dict[int, int] = {}  # signature id -> seq of its "signed" entry
    purged: dict[int, int] = {}  # signature id -> seq of the signed purge (records_purged) that deleted it
    altered: list[ChainBreak] = []
    prev_hash, prev_seq = GENESIS, 0
    for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).yield_per(1000):
        report.entries_checked += 1
        if e.seq != prev_seq + 1:
            report.breaks.append(ChainBreak(e.seq, f"entries {prev_seq + 1} to {e.seq - 1} are missing "
                                                   f"(deleted from the database)"))
        elif e.prev_hash != prev_hash:
            report.breaks.append(ChainBreak(e.seq, f"entry {e.seq} does not follow entry {prev_seq}: "
                                                   f"its link to the previous hash is wrong"))
        if not hmac.compare_digest(seal(key, entry_fields(e)), e.entry_hash):
            altered.append(ChainBreak(e.seq, f"entry {e.seq} ({e.action} {e.record_type} {e.record_id}) "
                                             f"was altered after it was written"))
        new = _json_field(e.new_values) if e.action == rows.ACTION or "rows_sealed" in e.new_values else {}
        for table, pk, sha in rows.sealed_rows([*new.get("rows", []), *new.get("rows_sealed", [])]):
            seals[(table, pk)] = (sha, e.seq)
        if e.action == "signed":
            sig_id = _json_field(e.new_values).get("signature_id")
            if isinstance(sig_id, int):
                signed[sig_id] = e.seq
        if e.action == "records_purged":  # a signed purge after retention lists the signatures it deleted
            for sig_id in _json_field(e.new_values).get("signatures_purged", []):
                purged[sig_id] = e.seq
        if e.seq in anchored:
            hash_at[e.seq] = e.entry_hash
        prev_hash, prev_seq = e.entry_hash, e.seq
    report.head_seq, report.head_hash = prev_seq, prev_hash
    fingerprint = key_fingerprint(key)
    if altered and len(altered) == report.entries_checked:
        # Every entry fails: far likelier a wrong key than an attacker who rewrote all of them.
        anchored_keys = sorted({a.key_fingerprint for a in anchors if a.key_fingerprint} - {fingerprint})
        report.breaks.append(ChainBreak(None, (
            f"the audit key does not match the chain: no entry verifies with this key (fingerprint {fingerprint}"
            + (f"; the anchors were written with {', '.join(anchored_keys)}" if anchored_keys else "")
            + "). Set AMTRACE_AUDIT_KEY to the key the chain was written with; if it is right, every entry was "
              "rewritten")))
        return report
    report.breaks.extend(altered)
    if expect_head and expect_head != prev_hash and not any(
            e for e in [session.scalar(select(AuditEntry).where(AuditEntry.entry_hash == expect_head))]):
        report.breaks.append(ChainBreak(None, "the head recorded earlier is no longer in the chain: "
                                              "entries at the end were deleted or replaced"))
    for a in anchors:
        when = anchored_time(a)
        if a.key_fingerprint and a.key_fingerprint != fingerprint:
            report.breaks.append(ChainBreak(None, f"the anchor of {when} was written with another audit key "
                                                  f"(fingerprint {a.key_fingerprint}, this key {fingerprint})"))
        elif a.seq > report.head_seq:
            report.breaks.append(ChainBreak(a.seq, f"entries {report.head_seq + 1} to {a.seq} are missing: the chain "
                                                   f"ends at entry {report.head_seq} but its head was entry {a.seq} "
                                                   f"on {when} (anchor file line {a.line}); the end was deleted"))
        elif hash_at.get(a.seq) != a.hash:
            report.breaks.append(ChainBreak(a.seq, f"entry {a.seq} is not the entry anchored on {when} (anchor file "
                                                   f"line {a.line}): the chain was rewritten from there"))
    for sig in session.scalars(select(Signature).order_by(Signature.id)):
        report.signatures_checked += 1
        report.breaks.extend(check_signature(session, key, sig))
        if sig.id not in signed:
            report.breaks.append(ChainBreak(None, f"signature {sig.id} ({sig.meaning} by {sig.printed_name}) has no "
                                                  f"'signed' entry in the audit trail: added outside amtrace", sig.id))
        signed.pop(sig.id, None)
    for sig_id, seq in sorted(signed.items()):
        if purged.get(sig_id, 0) > seq:
            continue  # deleted by a signed purge after retention, whose entry (checked above) names it
        report.breaks.append(ChainBreak(seq, f"signature {sig_id}, recorded in entry {seq}, is no longer in the "
                                             f"database: the signature row was deleted", sig_id))
    report.rows_checked, row_problems = rows.check_rows(session, seals)
    report.breaks.extend(ChainBreak(seq, problem) for seq, problem in row_problems)
    report.breaks.extend(ChainBreak(None, problem) for problem in _check_stored_files(session))
    return report


def _json_field(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _check_stored_files(session: Session) -> Iterator[str]:
    for files in STORED_FILES:
        for what, path, sha in files(session):
            try:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            except FileNotFoundError:
                yield f"{what}: the stored file {path} is missing"
                continue
            if digest.hexdigest() != sha:
                yield f"{what}: the stored file {path} no longer has its recorded SHA-256 (its bytes were replaced)"


