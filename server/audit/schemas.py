"""Bodies of the audit trail API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.limits import TEXT_MAX


class AuditEntryOut(BaseModel):
    """One audit trail entry."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    user_id: int | None
    action: str
    record_type: str
    record_id: str
    old_values: str = Field(description="Canonical JSON of the values before the change")
    new_values: str = Field(description="Canonical JSON of the values after the change")
    reason: str | None
    prev_hash: str
    entry_hash: str


class ChainBreakOut(BaseModel):
    """A place where verification failed."""

    seq: int | None = Field(description="Audit entry where the chain breaks (null for a signature problem)")
    signature_id: int | None = None
    problem: str


class VerificationOut(BaseModel):
    """Result of verifying the audit chain and every signature."""

    ok: bool
    entries_checked: int
    signatures_checked: int
    rows_checked: int = Field(description="Regulated rows compared with their seal in the chain")
    head_seq: int = Field(description="Sequence number of the last entry; keep it outside the database")
    head_hash: str = Field(description="Hash of the last entry; pass as expect_head later to detect tail deletion")
    breaks: list[ChainBreakOut]


class SignatureOut(BaseModel):
    """An electronic signature as shown on screen and in print (P11 11.50)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    printed_name: str
    signer_role: str
    meaning: str
    signed_at: datetime
    record_type: str
    record_id: str
    record_sha256: str


class SignIn(BaseModel):
    """Re-authentication and meaning for an electronic signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(description="The signer's password, asked again at each signing")
    meaning: str = Field(default="approved", description="authored, reviewed, approved or performed")
