"""Ethylene-oxide sterilization (ISO 11135): gas, humidity, temperature and exposure; aeration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.cycles.criteria import Trace, Verdict, at_least, in_range, longest_run, no_data
from server.cycles.processes.base import CycleProcess, PlotField, RecipeWindow


class EthyleneOxideParameters(RecipeWindow):
    """Ethylene-oxide sterilization: gas, humidity, temperature and exposure; aeration time and temperature."""

    process: Literal["ethylene_oxide"] = "ethylene_oxide"
    measurement: str = Field(default="eto", description="Measurement of the EtO sterilizer's signals")
    phase_field: str = Field(default="phase", description="Field holding the cycle phase")
    exposure_phase: str = Field(default="exposure", description="Phase value during gas exposure")
    aeration_phase: str = Field(default="aeration", description="Phase value during aeration")
    concentration_field: str = Field(default="eo_concentration_mg_l", description="EO concentration, mg/L")
    humidity_field: str = Field(default="humidity_pct_rh", description="Relative humidity, %")
    temperature_field: str = Field(default="chamber_temp_c", description="Chamber temperature, °C")
    concentration_mg_l: tuple[float, float] = Field(default=(450.0, 1200.0), description="Validated range, mg/L")
    humidity_pct_rh: tuple[float, float] = Field(default=(40.0, 80.0), description="Validated range, % RH")
    temperature_c: tuple[float, float] = Field(default=(37.0, 63.0), description="Validated exposure range, °C")
    min_exposure_s: float = Field(gt=0, description="Minimum gas exposure time")
    min_aeration_s: float = Field(gt=0, description="Minimum aeration time")
    aeration_temperature_c: tuple[float, float] = Field(default=(35.0, 60.0), description="Aeration range, °C")


def evaluate_ethylene_oxide(p: EthyleneOxideParameters, trace: Trace) -> Verdict:
    """Gas concentration, humidity, temperature and time of exposure; aeration time and temperature."""
    phases = trace.values(p.phase_field)
    if not trace.times:
        return no_data("ethylene_oxide", p.measurement)
    exposure = [ph == p.exposure_phase for ph in phases]
    aeration = [ph == p.aeration_phase for ph in phases]
    criteria = []
    for name, fld, (lo, hi), unit, what in (
            ("eo_concentration", p.concentration_field, p.concentration_mg_l, "mg/L", "EO concentration"),
            ("relative_humidity", p.humidity_field, p.humidity_pct_rh, "% RH", "relative humidity"),
            ("exposure_temperature", p.temperature_field, p.temperature_c, "°C", "exposure temperature")):
        ts, vs = trace.numeric(fld, exposure)
        criteria.append(in_range(name, vs, ts, lo, hi, unit, what))
    criteria.append(at_least("exposure_time", longest_run(trace.times, exposure, p.max_gap_s)[0],
                              p.min_exposure_s, "s", "gas exposure time"))
    criteria.append(at_least("aeration_time", longest_run(trace.times, aeration, p.max_gap_s)[0],
                              p.min_aeration_s, "s", "aeration time"))
    ts, vs = trace.numeric(p.temperature_field, aeration)
    criteria.append(in_range("aeration_temperature", vs, ts, *p.aeration_temperature_c, "°C", "aeration temperature"))
    return Verdict(passed=all(c.passed for c in criteria), process="ethylene_oxide", samples=len(trace.times),
                   criteria=criteria)



def plausible(p: EthyleneOxideParameters) -> dict[str, tuple[float, float, str]]:
    """Readings an EtO sterilizer can physically produce."""
    return {p.temperature_field: (-20.0, 120.0, "°C"), p.humidity_field: (0.0, 100.0, "% RH"),
            p.concentration_field: (0.0, 5000.0, "mg/L")}


def plot(p: EthyleneOxideParameters) -> list[PlotField]:
    """Concentration, humidity and temperature with their validated ranges."""
    return [(p.concentration_field, {"warn_low": p.concentration_mg_l[0], "warn_high": p.concentration_mg_l[1]}),
            (p.humidity_field, {"warn_low": p.humidity_pct_rh[0], "warn_high": p.humidity_pct_rh[1]}),
            (p.temperature_field, {"warn_low": p.temperature_c[0], "warn_high": p.temperature_c[1]})]


PROCESS = CycleProcess(name="ethylene_oxide", parameters=EthyleneOxideParameters,
                       evaluate=lambda p, trace, _: evaluate_ethylene_oxide(p, trace), plausible=plausible,
                       coverage_fields=lambda p: [p.temperature_field, p.humidity_field, p.concentration_field],
                       plot=plot)
