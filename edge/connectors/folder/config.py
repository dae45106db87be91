"""Configuration of a cycle-log folder (a machine that exports one file per cycle) and of one column signal."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FolderConfig(BaseModel):
    """Where a machine drops its cycle logs and how to read them."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = Field(description="Connector type")
    path: str = Field(min_length=1, description="Folder (often a network share) the machine writes its logs into")
    patterns: list[str] = Field(default_factory=lambda: ["*.csv"], min_length=1,
                                description="File name patterns of cycle logs (case-insensitive)")
    format: Literal["csv", "key_value"] = Field(
        default="csv",
        description="csv: a header line, then one row per sample; key_value: one 'key: value' per line, one "
                    "sample per file (a cycle summary printout)")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: column separator (',' ';' tab)")
    decimal: Literal[".", ","] = Field(default=".", description="Decimal mark of numbers ('3,5' with ',')")
    key_separator: str = Field(default=":", min_length=1, max_length=3, description="key_value: between key and value")
    encoding: str = Field(default="utf-8", description="Text encoding of the files (e.g. utf-8, cp1252, latin-1)")
    skip_lines: int = Field(default=0, ge=0, le=1000, description="Lines before the header (a printout's title)")
    time_column: str = Field(min_length=1, description="Column (csv) or key (key_value) holding each sample's time")
    time_format: str = Field(
        default="iso",
        description="iso (ISO 8601), unix_s, unix_ms, or a strftime pattern such as '%d.%m.%Y %H:%M:%S'")
    timezone: str = Field(default="UTC", description="IANA zone of times written without an offset (Europe/Berlin)")
    stable_s: float = Field(default=2.0, ge=0, le=3600,
                            description="A file unchanged this long is complete (the machine has finished writing)")
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600, description="How often the folder is looked at")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Larger files are refused unread")
    max_rows: int = Field(default=1_000_000, ge=1, description="Files with more samples are refused")
    max_future_skew_s: float = Field(default=300.0, ge=0, description="A sample further in the future is refused")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{v}' is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"'{v}' is not a text encoding Python knows") from None
        return v


class FolderSource(BaseModel):
    """Which column (or key) of a cycle log holds a signal, and how to bring it to the signal's unit."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = Field(description="Protocol of the source; taken from connection.type when not written")
    column: str = Field(min_length=1, description="Header of the column (csv) or the key (key_value), exactly")
    scale: float = Field(default=1.0, description="value = number × scale + offset (unit conversion, e.g. bar → kPa: 100)")
    offset: float = Field(default=0.0, description="Added after scaling")
    true_values: list[str] = Field(default_factory=lambda: ["1", "true", "yes", "on", "ok"],
                                   description="bool signals: texts read as true (case-insensitive); others false")
