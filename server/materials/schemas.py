"""Bodies of the materials API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.limits import Day, TEXT_MAX

# Surrounding blanks are dropped, and a blank value refused (a lot "with a certificate" of "   " was accepted).
Text100 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class LotCreate(BaseModel):
    """Register a material lot."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    lot_number: Text100 = Field(description="The supplier's or stores' lot number")
    material: Text100 = Field(description="Material specification, e.g. Ti-6Al-4V ELI")
    supplier: Text200
    certificate_ref: Text200 = Field(description="Certificate of analysis reference (not blank)")
    lot_type: Literal["virgin", "used", "blend"]
    reuse_count: int = Field(default=0, ge=0, description="Builds this powder has already been through")
    reuse_limit: int = Field(ge=0, description="Maximum number of builds; a lot at its limit is refused")
    expires_on: Day | None = None


class LotStatusIn(BaseModel):
    """Quarantine or release a lot."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    status: Literal["released", "quarantined"]
    reason: str = Field(min_length=3, max_length=2000)
    password: str | None = Field(None, max_length=200, description=(
        "Releasing: the quality engineer's password (electronic signature, meaning approved)"))


class LotOut(BaseModel):
    """A material lot."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    lot_number: str
    material: str
    supplier: str
    certificate_ref: str
    lot_type: str
    reuse_count: int
    reuse_limit: int
    status: str
    expires_on: date | None
    created_at: datetime
