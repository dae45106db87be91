"""HTTP endpoints to read and verify the audit trail (no endpoint can change or delete it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

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
CASE_READS = ("case_read", "case_data_read")


@router.get("/entries", response_model=list[AuditEntryOut])
def list_entries(session: SessionDep, actor: Reviewer, record_type: str | None = None,
                 record_id: str | None = None, after_seq: int = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntry]:
    """Audit trail review: entries after after_seq, optionally for one record."""
    q = select(AuditEntry).where(AuditEntry.seq > after_seq)
    if record_type:
        q = q.where(AuditEntry.record_type == record_type)
    if record_id:
        q = q.where(AuditEntry.record_id == record_id)
    entries = list(session.scalars(q.order_by(AuditEntry.seq).limit(limit)))
    # Entries about cases carry case data (pseudonym, clinician, surgery date): reading them is a read of the
    # case, audited like GET /cases/{id} (R11). Read entries themselves carry only ids, so polling stays quiet.
    cases = sorted({e.record_id for e in entries if e.record_type == "case" and e.action not in CASE_READS},
                   key=lambda c: int(c) if c.isdigit() else 0)
    if cases:
        service.record(session, actor=actor, action="case_data_read", record_type="case",
                       record_id=",".join(cases)[:64], new={"via": "audit trail", "cases": cases})
    return entries


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
    return list(session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                        Signature.record_id == record_id)
                                .order_by(Signature.id)))
