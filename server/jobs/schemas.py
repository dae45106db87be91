"""Bodies of the jobs, devices and UDI API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import TEXT_MAX


class Placement(BaseModel):
    """Where a part sits in the build volume."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    x_mm: float
    y_mm: float
    z_mm: float = 0.0
    orientation: str = Field(default="XY", description="E.g. XY, Z, 45deg")


class DevicePlan(BaseModel):
    """One device on the job, made from one design iteration."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    design_iteration_id: int
    position: Placement | None = None


class CouponPlan(BaseModel):
    """A test coupon on the job."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    label: str
    position: Placement | None = None


class JobCreate(BaseModel):
    """Plan a job."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_id: str
    material_lot_id: int
    devices: list[DevicePlan] = Field(min_length=1)
    coupons: list[CouponPlan] = []
    build_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Layer thickness, scan strategy id, supports, orientation…")


class DeviceOut(BaseModel):
    """A device or coupon with its device code and UDI."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_code: str
    job_id: int
    kind: Literal["device", "coupon"]
    case_id: int | None
    design_iteration_id: int | None
    regulatory_category: Literal["custom_made", "patient_matched"] | None
    udi_hri: str | None = Field(description="UDI, human-readable form")
    udi_element_string: str | None = Field(description="UDI element string (GS = \\u001d after variable fields)")
    position: dict[str, Any]
    state: str


class JobOut(BaseModel):
    """A job with its devices."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: str
    material_lot_id: int
    process: str
    material: str
    product_family: str
    state: Literal["planned", "released", "closed"]
    build_parameters: dict[str, Any]
    created_at: datetime
    devices: list[DeviceOut]


class CloseIn(BaseModel):
    """Close a job."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: str = Field(default="build finished", min_length=3)


class UdiIn(BaseModel):
    """A scanned or typed UDI."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    udi: str = Field(description="HRI '(01)…(21)…' or element string '01…' (GS or | between fields)")


class UdiOut(BaseModel):
    """A parsed, valid UDI."""

    gtin: str
    production_date: date | None
    expiry_date: date | None
    lot: str | None
    serial: str | None
    human_readable: str
    element_string: str
