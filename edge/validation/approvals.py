"""The approved build files for a job: what the edge checks a received build file against.

The server's agent API returns exactly this shape (GET the job context of a machine); until the
server is reachable the agent reads it from a local approvals file (YAML or JSON) of the same shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApprovedBuildFile(BaseModel):
    """One approved file of a design iteration, identified by its hash."""

    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(description="Name of the approved file as stored at design approval")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lowercase hex SHA-256 of the file's bytes")
    geometry_fingerprint: str | None = Field(
        default=None, description="Canonical geometry fingerprint (edge.validation), when the file is a mesh"
    )
    size_bytes: int | None = Field(default=None, ge=0, description="File size in bytes")
    design_iteration: str = Field(description="Id of the approved design iteration this file belongs to")
    device_codes: list[str] = Field(default_factory=list, description="Devices on the job made from this file")
    design_file: str | None = Field(
        default=None,
        description="Local copy of the approved file, for the difference report; used only if its SHA-256 matches",
    )
    allow_geometry_equal: bool = Field(
        default=False,
        description="Per-product policy: may a file with equal geometry but different bytes build? Off by default.",
    )


class JobApprovals(BaseModel):
    """All approved build files for the job currently assigned to a machine."""

    model_config = ConfigDict(extra="forbid")

    machine_id: str = Field(description="Machine id as in configs/machines")
    job_id: str = Field(description="Job id")
    files: list[ApprovedBuildFile] = Field(default_factory=list, description="Approved files for this job")
