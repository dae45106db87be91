"""Bodies of the cases and designs API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.audit.schemas import SignatureOut
from server.limits import Day, TEXT_MAX


class CaseCreate(BaseModel):
    """Open a case; the patient is known only by a pseudonymous reference."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    patient_ref: str | None = Field(
        None, pattern=r"^[A-Z0-9][A-Z0-9-]{2,63}$",
        description="Pseudonymous patient reference (capitals, digits, dashes; never a name or a date of birth). "
                    "Leave it out and the server issues one (P-XXXXXXXXXX), which is the safer way")
    clinician_username: str | None = Field(
        None, max_length=64, description="The case's clinician, a user with role clinician: only they (or their "
                                         "delegate) approve its designs and accept its devices. Left out when a "
                                         "clinician opens the case for themself")
    delegate_username: str | None = Field(None, max_length=64, description="Another clinician who may act for them")
    institution: str = Field(min_length=2, max_length=200)
    surgery_date: Day
    imaging_date: Day | None = Field(None, description="When the patient was imaged (label data); may follow later")


class DelegateIn(BaseModel):
    """The clinician who may act for the case's clinician, or null to withdraw the delegation."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    delegate_username: str | None = Field(max_length=64)


class TeamMemberIn(BaseModel):
    """A design engineer to name to the design's team."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    username: str = Field(max_length=64)


class ImagingDateIn(BaseModel):
    """When the patient was imaged."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    imaging_date: Day


class SurgeryDateIn(BaseModel):
    """A new surgery date for a case, why, and the signer's password."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    surgery_date: Day
    reason: str = Field(min_length=10, max_length=2000, description="Why the date moved (e.g. the hospital's notice)")
    password: str = Field(max_length=200, description="Electronic signature (meaning approved)")


class CaseOut(BaseModel):
    """A case."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_ref: str
    clinician: str = Field(description="The clinician's printed name")
    clinician_username: str | None = Field(description="None only for cases opened before clinicians were users")
    delegate_username: str | None
    institution: str
    surgery_date: date
    imaging_date: date | None
    created_at: datetime


class DesignCreate(BaseModel):
    """Create a design for the case."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    name: str
    process: str = Field(description="Manufacturing process, e.g. LPBF")
    material: str = Field(description="Material specification")
    product_family: str
    regulatory_category: Literal["custom_made", "patient_matched"]
    gtin: str | None = Field(default=None, description="GTIN-14 (device identifier) when the device carries a UDI")
    intended_use: str = Field(min_length=10, max_length=2000,
                              description="Intended use as the label states it, e.g. 'total hip arthroplasty, "
                                          "cementless acetabular component'")
    anatomical_site: str = Field(min_length=2, max_length=200, description="Where it goes, e.g. 'left acetabulum'")


class DesignOut(BaseModel):
    """A design."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    case_id: int
    name: str
    process: str
    material: str
    product_family: str
    regulatory_category: str
    gtin: str | None
    intended_use: str | None
    anatomical_site: str | None


class DesignFileOut(BaseModel):
    """A file of an iteration, with the hash the server computed."""

    model_config = ConfigDict(from_attributes=True)

    file_name: str
    sha256: str
    size_bytes: int


class IterationOut(BaseModel):
    """A design iteration with its files and signatures."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    design_id: int
    number: int
    software_name: str
    software_version: str
    change_note: str
    content_sha256: str = Field(description="Hash of the iteration's content; signatures bind to it")
    status: Literal["draft", "approved", "superseded"]
    created_at: datetime
    files: list[DesignFileOut]
    signatures: list[SignatureOut] = []


class IterationSignIn(BaseModel):
    """Approval of an iteration by a design engineer or clinician."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(description="Re-entered at signing")
