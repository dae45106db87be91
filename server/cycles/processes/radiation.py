"""Radiation sterilization (ISO 11137): dosimeter doses against the sterilization and maximum acceptable dose."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.cycles.criteria import Criterion, Trace, Verdict, fmt, no_data
from server.cycles.processes.base import CycleProcess, PlotField, RecipeWindow


class RadiationParameters(RecipeWindow):
    """Radiation sterilization: minimum and maximum dose measured by dosimeters against the validated dose."""

    process: Literal["radiation"] = "radiation"
    measurement: str = Field(default="irradiation", description="Measurement of the dosimeter readings")
    dose_field: str = Field(default="dose_kgy", description="Absorbed dose per dosimeter, kGy")
    sterilization_dose_kgy: float = Field(gt=0, description="Validated sterilization dose: the minimum, e.g. 25 kGy")
    max_acceptable_dose_kgy: float = Field(gt=0, description="Maximum dose the device is validated to tolerate")


def evaluate_radiation(p: RadiationParameters, trace: Trace) -> Verdict:
    """Lowest dosimeter dose at least the sterilization dose; highest at most the maximum acceptable dose."""
    ts, doses = trace.numeric(p.dose_field)
    if not ts:
        return no_data("radiation", f"{p.measurement}.{p.dose_field}")
    lo, hi = min(doses), max(doses)
    criteria = [
        Criterion(name="minimum_dose", measured=lo, limit=f">= {fmt(p.sterilization_dose_kgy)} kGy", unit="kGy",
                  passed=lo >= p.sterilization_dose_kgy,
                  reason=f"lowest dosimeter read {fmt(lo)} kGy against the validated sterilization dose "
                         f"{fmt(p.sterilization_dose_kgy)} kGy" + ("" if lo >= p.sterilization_dose_kgy
                                                                     else ": the load may not be sterile")),
        Criterion(name="maximum_dose", measured=hi, limit=f"<= {fmt(p.max_acceptable_dose_kgy)} kGy", unit="kGy",
                  passed=hi <= p.max_acceptable_dose_kgy,
                  reason=f"highest dosimeter read {fmt(hi)} kGy against the maximum acceptable dose "
                         f"{fmt(p.max_acceptable_dose_kgy)} kGy" + ("" if hi <= p.max_acceptable_dose_kgy
                                                                     else ": the material may be degraded")),
    ]
    return Verdict(passed=all(c.passed for c in criteria), process="radiation", samples=len(ts), criteria=criteria)



def plot(p: RadiationParameters) -> list[PlotField]:
    """Dosimeter doses between the sterilization dose and the maximum acceptable dose."""
    return [(p.dose_field, {"warn_low": p.sterilization_dose_kgy, "warn_high": p.max_acceptable_dose_kgy})]


# Dosimeters are read once per load, not streamed: nothing has to cover the window.
PROCESS = CycleProcess(name="radiation", parameters=RadiationParameters,
                       evaluate=lambda p, trace, _: evaluate_radiation(p, trace),
                       plausible=lambda p: {p.dose_field: (0.0, 1000.0, "kGy")}, coverage_fields=lambda p: [],
                       plot=plot)
