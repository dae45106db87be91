"""HTTP endpoints to read and verify the audit trail (no endpoint can change or delete it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

import server.registry  # noqa: F401 - every domain registers how to rehash its signed records and files
from server.audit import service, verify as chain_verify
from server.audit.schemas import AuditEntryOut, ChainBreakOut, SignatureOut, VerificationOut
from server.auth.deps import require
from server.db import SessionDep, begin_read
from server.errors import COMMON_ERRORS
from server.models import AuditEntry, Signature
from server.security import Principal

router = APIRouter(prefix="/audit", tags=["audit trail"], responses=COMMON_ERRORS)
Reviewer = Annotated[Principal, Depends(require("quality_engineer", "admin"))]


@router.get("/entries", response_model=list[AuditEntryOut])
def list_entries(session: SessionDep, actor: Reviewer, record_type: str | None = None,
                 record_id: str | None = None, after_seq: int = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntry]:
    """Audit trail review: entries after after_seq, optionally for one record."""
    return service.review_entries(session, actor=actor, record_type=record_type, record_id=record_id,
                                  after_seq=after_seq, limit=limit)


@router.get("/verify", response_model=VerificationOut)
def verify(session: SessionDep, actor: Reviewer, expect_head: str | None = None) -> VerificationOut:
    """Verify the hash chain and every signature; say where anything breaks."""
    begin_read(session)  # walks the whole chain: on SQLite a read transaction holds up no writer meanwhile
    r = chain_verify.verify(session, expect_head=expect_head)
    return VerificationOut(ok=r.ok, entries_checked=r.entries_checked, signatures_checked=r.signatures_checked,
                           rows_checked=r.rows_checked,
                           head_seq=r.head_seq, head_hash=r.head_hash,
                           breaks=[ChainBreakOut(seq=b.seq, signature_id=b.signature_id, problem=b.problem)
                                   for b in r.breaks])


@router.get("/signatures", response_model=list[SignatureOut])
def list_signatures(session: SessionDep, actor: Reviewer, record_type: str, record_id: str) -> list[Signature]:
    """Signatures on one record."""
    return service.signatures_on(session, record_type=record_type, record_id=record_id)
