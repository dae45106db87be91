"""Limits that bound the time and memory spent on one build file, whatever the file claims."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ValidationLimits(BaseModel):
    """Upper bounds checked before allocating; a file beyond any of them is refused, not truncated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_bytes: int = Field(
        default=1 << 30, gt=0, description="Largest build file read at all (bytes); 1 GiB holds a 21M-triangle binary STL"
    )
    max_triangles: int = Field(
        default=10_000_000,
        gt=0,
        description="Most triangles in one build file; peak memory is about 100 bytes per triangle",
    )
    max_abs_coordinate_mm: float = Field(
        default=100_000.0,
        gt=0,
        description="Largest absolute coordinate accepted (mm); keeps quantised coordinates inside int32",
    )
    max_zip_members: int = Field(default=1_000, gt=0, description="Most entries in a 3MF package")
    max_member_bytes: int = Field(
        default=1 << 30, gt=0, description="Largest uncompressed size of one 3MF package entry (bytes)"
    )
    max_total_uncompressed_bytes: int = Field(
        default=2 << 30, gt=0, description="Largest sum of uncompressed sizes of all 3MF entries read (bytes)"
    )
    max_compression_ratio: float = Field(
        default=100.0,
        gt=1,
        description="Largest uncompressed/compressed ratio of a 3MF entry; mesh XML compresses about 3-6x, bombs 1000x",
    )
    max_xml_depth: int = Field(default=32, gt=0, description="Deepest XML element nesting accepted in a 3MF model")
    max_component_depth: int = Field(
        default=16, gt=0, description="Deepest nesting of 3MF components (objects made of other objects)"
    )
    min_plausible_extent_mm: float = Field(
        default=1.0,
        ge=0,
        description="A part whose largest extent is below this is taken as a unit error (e.g. metres read as mm)",
    )
