"""Bodies of the nonconformities API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import TEXT_MAX

Kind = Literal["build_file_mismatch", "limit_excursion", "failed_cycle", "dimensional", "surface", "material",
               "other"]


class NonconformityIn(BaseModel):
    """A nonconformity raised by a person."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    kind: Kind
    description: str = Field(min_length=3)
    machine_id: str | None = Field(None, description="A machine alone: stops every job on it")
    job_id: int | None = None
    device_code: str | None = None
    material_lot_id: int | None = Field(None, description="Stops every job built from the lot")
    design_iteration_id: int | None = Field(None, description="Stops every device of the design iteration")


class DispositionIn(BaseModel):
    """The quality engineer's disposition and signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    disposition: Literal["use_as_is", "rework", "scrap", "return_to_supplier"]
    rationale: str = Field(min_length=3)
    password: str


class NonconformityOut(BaseModel):
    """A nonconformity."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    source: Literal["person", "edge"]
    kind: str
    description: str
    machine_id: str | None
    job_id: int | None
    device_id: int | None
    material_lot_id: int | None
    design_iteration_id: int | None
    details: dict[str, Any]
    raised_by: str
    raised_at: datetime
    state: Literal["open", "dispositioned"]
    disposition: str | None
    disposition_rationale: str | None
    disposition_signature_id: int | None
    dispositioned_at: datetime | None
