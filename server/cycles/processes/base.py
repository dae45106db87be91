"""What a cycle process is: one module per process under server/cycles/processes/, found through one map.

A process module holds its recipe parameters model (the validated window), its evaluation, the plausible
range of each judged signal, the signals that must cover the cycle, and what its cycle plot shows with which
limits. Adding a process = its module + one line in processes/__init__.py (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from server.cycles.criteria import ResidueResult, Trace, Verdict
from server.limits import TEXT_MAX


class RecipeWindow(BaseModel):
    """What every recipe version names: where its machine's signals are and what counts as continuous."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    measurement: str = Field(description="InfluxDB measurement the machine's signals are written to")
    max_gap_s: float = Field(default=5.0, gt=0, description=(
        "Longest gap between two samples still counted as continuous; a longer gap ends a hold or "
        "exposure and earns no lethality (what happened in it is unknown)"))


PlotField = tuple[str, dict[str, float]]  # (InfluxDB field, limits drawn: warn_low / warn_high)


@dataclass(frozen=True)
class CycleProcess:
    """One process: its parameters model and everything the evaluation, the DHR and its plots need from it."""

    name: str  # the `process` value of its parameters
    parameters: type[RecipeWindow]
    evaluate: Callable[[Any, Trace, list[ResidueResult]], Verdict]
    plausible: Callable[[Any], dict[str, tuple[float, float, str]]]  # field -> (low, high, unit) physically possible
    coverage_fields: Callable[[Any], list[str]]  # streamed signals that must be read across the whole window
    plot: Callable[[Any], list[PlotField]]  # the signals its verdict is judged on, in plot order, with limits
