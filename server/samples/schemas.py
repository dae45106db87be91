"""Bodies of the retained-samples API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.limits import TEXT_MAX, Day

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=2000)]
Password = Field(None, max_length=200, description="The quality engineer's password (electronic signature)")


class SampleCreate(BaseModel):
    """Keep a coupon or a device as a retained sample."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    device_code: Text200
    location: Text200 = Field(description="Where it is stored, e.g. 'QC cabinet 2, shelf B'")
    condition: Text200 = Field(description="Its condition, e.g. 'as built, bagged'")
    retain_until: Day | None = Field(None, description="Default: the device's own retention date (if released)")


class SampleMove(BaseModel):
    """Move a stored sample."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    to_location: Text200
    reason: Reason


class SampleWithdrawal(BaseModel):
    """Withdraw a stored sample for a destructive test (signed)."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: Reason
    test_reference: Text200 = Field(description="The test order or report the sample is used for")
    password: str | None = Password


class SampleDisposal(BaseModel):
    """Dispose of a sample after its retention (signed)."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: Reason
    password: str | None = Password


class CustodyOut(BaseModel):
    """One custody step."""

    action: str
    at: datetime
    by_user_id: int
    from_location: str | None
    to_location: str | None
    reason: str
    reference: str | None
    signature_id: int | None


class SampleOut(BaseModel):
    """A retained sample with its custody."""

    id: int
    device_code: str
    kind: str
    job_id: int
    location: str
    condition: str
    retain_until: date
    state: str
    registered_at: datetime
    custody: list[CustodyOut]
