"""Cleaning and washing: wash temperature and time, final-rinse conductivity, residue test results."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.cycles.criteria import (Criterion, ResidueResult, Trace, Verdict, at, at_least, fmt, in_range,
                                    longest_run, no_data)
from server.cycles.processes.base import CycleProcess, PlotField, RecipeWindow
from server.limits import TEXT_MAX


class ResidueLimit(BaseModel):
    """A residue test required after cleaning and its acceptance limit."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    test: str = Field(min_length=1, description="Test name, e.g. protein_ug_cm2, toc_ppm")
    max: float = Field(description="Highest accepted result")
    unit: str = Field(description="Unit of the result")


class CleaningParameters(RecipeWindow):
    """Cleaning/washing: wash temperature and time, final-rinse conductivity, residue test results."""

    process: Literal["cleaning"] = "cleaning"
    measurement: str = Field(default="cleaning", description="Measurement of the washer's signals")
    phase_field: str = Field(default="step", description="Field holding the washer step")
    wash_phase: str = Field(default="ultrasonic_wash", description="Step value during the wash")
    final_rinse_phase: str = Field(default="final_rinse", description="Step value during the final rinse")
    temperature_field: str = Field(default="bath_temp_c", description="Bath temperature, °C")
    conductivity_field: str = Field(default="conductivity_us_cm", description="Rinse water conductivity, µS/cm")
    wash_temperature_c: tuple[float, float] = Field(description="Validated wash temperature range, °C")
    min_wash_s: float = Field(gt=0, description="Minimum wash time")
    max_final_conductivity_us_cm: float = Field(gt=0, description="Conductivity at the end of the final rinse")
    residue_limits: list[ResidueLimit] = Field(default_factory=list, description="Residue tests and limits")


def evaluate_cleaning(p: CleaningParameters, trace: Trace, residues: list[ResidueResult]) -> Verdict:
    """Wash temperature and time, final-rinse conductivity, and each required residue result."""
    if not trace.times:
        return no_data("cleaning", p.measurement)
    steps = trace.values(p.phase_field)
    wash = [s == p.wash_phase for s in steps]
    ts, vs = trace.numeric(p.temperature_field, wash)
    criteria = [in_range("wash_temperature", vs, ts, *p.wash_temperature_c, "°C", "wash temperature"),
                at_least("wash_time", longest_run(trace.times, wash, p.max_gap_s)[0], p.min_wash_s, "s",
                          "wash time")]
    ct, cv = trace.numeric(p.conductivity_field, [s == p.final_rinse_phase for s in steps])
    if cv:
        ok = cv[-1] <= p.max_final_conductivity_us_cm
        criteria.append(Criterion(
            name="final_rinse_conductivity", measured=cv[-1], limit=f"<= {fmt(p.max_final_conductivity_us_cm)} µS/cm",
            unit="µS/cm", passed=ok, reason=f"conductivity at the end of the final rinse ({at(ct[-1])}) was "
                                            f"{fmt(cv[-1])} µS/cm"))
    else:
        criteria.append(Criterion(name="final_rinse_conductivity", measured=None,
                                  limit=f"<= {fmt(p.max_final_conductivity_us_cm)} µS/cm", unit="µS/cm",
                                  passed=False, reason="no final rinse recorded"))
    given = {r.test: r for r in residues}
    for lim in p.residue_limits:
        r = given.get(lim.test)
        if r is None:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=None, limit=f"<= {fmt(lim.max)} {lim.unit}",
                                      unit=lim.unit, passed=False, reason=f"residue test {lim.test} not recorded"))
        elif r.unit != lim.unit:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=r.value, limit=f"<= {fmt(lim.max)} {lim.unit}",
                                      unit=r.unit, passed=False,
                                      reason=f"residue test {lim.test} recorded in {r.unit}, the limit is in {lim.unit}"))
        else:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=r.value, limit=f"<= {fmt(lim.max)} {lim.unit}",
                                      unit=lim.unit, passed=r.value <= lim.max,
                                      reason=f"residue test {lim.test}: {fmt(r.value)} {lim.unit}"))
    return Verdict(passed=all(c.passed for c in criteria), process="cleaning", samples=len(trace.times),
                   criteria=criteria)



def plausible(p: CleaningParameters) -> dict[str, tuple[float, float, str]]:
    """Readings a washer can physically produce."""
    return {p.temperature_field: (-20.0, 150.0, "°C"), p.conductivity_field: (0.0, 1_000_000.0, "µS/cm")}


def plot(p: CleaningParameters) -> list[PlotField]:
    """Bath temperature with the wash range, and conductivity with the final-rinse maximum."""
    return [(p.temperature_field, {"warn_low": p.wash_temperature_c[0], "warn_high": p.wash_temperature_c[1]}),
            (p.conductivity_field, {"warn_high": p.max_final_conductivity_us_cm})]


PROCESS = CycleProcess(name="cleaning", parameters=CleaningParameters, evaluate=evaluate_cleaning,
                       plausible=plausible, coverage_fields=lambda p: [p.temperature_field], plot=plot)
