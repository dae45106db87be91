"""Bodies of the delivery API: label data, delivery lists, dispatch and acceptance."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.history.schemas import SignatureManifest
from server.limits import TEXT_MAX


class Label(BaseModel):
    """What a patient-matched device's label says (domain §2.5, R17), read from the records it comes from."""

    device_code: str
    udi_hri: str | None = Field(description="The UDI in human-readable form, (01)…(21)…")
    udi_element_string: str | None = Field(description="The UDI as GS1 element string (GS separates fields)")
    regulatory_category: str | None
    statement: str = Field(description="For whom the device is made, by pseudonym only")
    design: str
    design_iteration: int
    intended_use: str | None
    anatomical_site: str | None
    imaging_date: date | None
    design_completed_on: date | None = Field(description="When the iteration was approved (its last approval)")
    institution: str
    clinician: str
    patient_ref: str = Field(description="Pseudonymous patient reference")
    surgery_date: date
    material: str
    missing: list[str] = Field(description="Label data not yet recorded; a device cannot be dispatched until empty")


class ReadyDevice(BaseModel):
    """A released device not yet on a delivery list (no patient reference: production ships by device code)."""

    device_code: str
    design: str
    case_id: int
    clinician: str
    clinician_username: str | None
    institution: str
    surgery_date: date
    missing: list[str] = Field(description="Label data still missing; the device cannot go on a list until empty")


class ShipmentCreate(BaseModel):
    """Released devices to send together to one clinician."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    device_codes: list[str] = Field(min_length=1, max_length=100)
    note: str = Field("", max_length=2000, description="Carrier, packaging, anything the receiver should know")


class DispatchIn(BaseModel):
    """Dispatch the list: production signs each device's delivery step as performed."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(max_length=200, description="Electronic signature (meaning performed)")


class AcceptIn(BaseModel):
    """The clinician signs for the devices on the list as received and accepted."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    judgement: str = Field(min_length=3, max_length=2000, description="e.g. 'received intact, labels checked'")
    password: str = Field(max_length=200, description="Electronic signature (meaning reviewed)")


class ShipmentItemOut(BaseModel):
    """A device on a delivery list and where its delivery stands."""

    device_code: str
    delivery_state: str
    label: Label
    dispatched: SignatureManifest | None
    accepted: SignatureManifest | None


class ShipmentOut(BaseModel):
    """A delivery list."""

    id: int
    state: Literal["open", "dispatched", "accepted"]
    institution: str
    clinician: str
    clinician_username: str
    note: str
    created_at: datetime
    dispatched_at: datetime | None
    list_sha256: str | None = Field(description="SHA-256 of the list as dispatched; each acceptance binds it")
    accepted_at: datetime | None
    items: list[ShipmentItemOut]
