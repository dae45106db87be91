"""Saturated-steam sterilization (ISO 17665): plateau band, hold time, steam quality against IAPWS-IF97, F0."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iapws.iapws97 import _PSat_T
from server.cycles.criteria import NS, Criterion, Trace, Verdict, at, at_least, fmt, in_range, longest_run, no_data
from server.cycles.processes.base import CycleProcess, PlotField, RecipeWindow


F0_REFERENCE_C = 121.1
F0_Z_K = 10.0


def saturation_pressure_kpa(temp_c: float) -> float:
    """Saturated-steam pressure (kPa) at temp_c, IAPWS-IF97 region 4 (valid 0.01 °C to 373.946 °C)."""
    return _PSat_T(temp_c + 273.15) * 1000.0


class SteamParameters(RecipeWindow):
    """Saturated-steam sterilization: plateau band, hold time, steam quality and F0."""

    process: Literal["steam"] = "steam"
    measurement: str = Field(default="sterilization", description="Measurement of the sterilizer's signals")
    temperature_field: str = Field(default="chamber_temp_c", description="Reference chamber temperature, °C")
    pressure_field: str = Field(default="chamber_pressure_kpa", description="Chamber pressure, kPa absolute")
    sterilization_temp_c: float = Field(ge=100, le=150, description="Sterilization temperature, e.g. 134 or 121 °C")
    band_minus_k: float = Field(default=0.0, ge=0, description="Plateau band below the sterilization temperature, K")
    band_plus_k: float = Field(default=3.0, ge=0, description="Plateau band above the sterilization temperature, K")
    min_hold_s: float = Field(gt=0, description="Minimum continuous time at or above the sterilization temperature")
    pressure_tolerance_kpa: float = Field(gt=0, description=(
        "Largest allowed difference between measured pressure and saturated-steam pressure at the measured "
        "temperature on the plateau"))
    min_f0_min: float = Field(ge=0, description="Minimum lethality F0 (121.1 °C, z = 10 K), minutes")


def f0_minutes(times: list[int], temps: list[float], max_gap_s: float) -> float:
    """Lethality F0 in minutes: trapezoid rule on actual timestamps; intervals longer than max_gap_s earn none."""
    total = 0.0
    for i in range(1, len(times)):
        dt = (times[i] - times[i - 1]) / NS
        if dt <= 0 or dt > max_gap_s:
            continue
        la = 10 ** ((temps[i - 1] - F0_REFERENCE_C) / F0_Z_K)
        lb = 10 ** ((temps[i] - F0_REFERENCE_C) / F0_Z_K)
        total += (la + lb) / 2 * dt
    return total / 60.0



def evaluate_steam(p: SteamParameters, trace: Trace) -> Verdict:
    """Plateau band, hold time, steam quality (both directions) and F0 of a steam cycle."""
    times, temps = trace.numeric(p.temperature_field)
    if not times:
        return no_data("steam", f"{p.measurement}.{p.temperature_field}")
    t_ster = p.sterilization_temp_c
    hold_s, hold_from, hold_to = longest_run(times, [t >= t_ster for t in temps], p.max_gap_s)
    criteria = []
    if hold_from is None:
        peak = max(temps)
        criteria.append(Criterion(name="plateau_band", measured=peak, limit=f"{fmt(t_ster - p.band_minus_k)} to "
                                  f"{fmt(t_ster + p.band_plus_k)} °C", unit="°C", passed=False,
                                  reason=f"the chamber never reached {fmt(t_ster)} °C (peak {fmt(peak)} °C)"))
        criteria.append(at_least("hold_time", 0.0, p.min_hold_s, "s",
                                  f"time at or above {fmt(t_ster)} °C"))
    else:
        # The plateau: from first reaching the sterilization temperature to last leaving it.
        first = next(t for t, v in zip(times, temps) if v >= t_ster)
        last = max(t for t, v in zip(times, temps) if v >= t_ster)
        on = [first <= t <= last for t in times]
        pt = [t for t, o in zip(times, on) if o]
        pv = [v for v, o in zip(temps, on) if o]
        criteria.append(in_range("plateau_band", pv, pt, t_ster - p.band_minus_k, t_ster + p.band_plus_k, "°C",
                               "plateau temperature"))
        criteria.append(at_least("hold_time", hold_s, p.min_hold_s, "s",
                                  f"continuous time at or above {fmt(t_ster)} °C"))
        criteria.extend(_steam_quality(p, trace, first, last))
    f0 = f0_minutes(times, temps, p.max_gap_s)
    criteria.append(at_least("f0", f0, p.min_f0_min, "min", "lethality F0 (121.1 °C, z = 10 K)"))
    return Verdict(passed=all(c.passed for c in criteria), process="steam", samples=len(times), criteria=criteria)


def _steam_quality(p: SteamParameters, trace: Trace, first: int, last: int) -> list[Criterion]:
    temps, press = trace.values(p.temperature_field), trace.values(p.pressure_field)
    dev: list[tuple[float, int, float, float]] = []  # (measured − saturated, time, T, p)
    for t, temp, pres in zip(trace.times, temps, press):
        if first <= t <= last and isinstance(temp, (int, float)) and isinstance(pres, (int, float)):
            dev.append((pres - saturation_pressure_kpa(temp), t, temp, pres))
    tol = p.pressure_tolerance_kpa
    limit = f"within {fmt(tol)} kPa of saturated steam"
    if not dev:
        missing = Criterion(name="steam_not_superheated", measured=None, limit=limit, unit="kPa", passed=False,
                            reason=f"no chamber pressure ({p.pressure_field}) recorded on the plateau")
        return [missing, missing.model_copy(update={"name": "no_non_condensable_gas"})]
    low = min(dev)
    high = max(dev)
    below = Criterion(
        name="steam_not_superheated", measured=round(low[0], 2), limit=f">= -{fmt(tol)} kPa ({limit})",
        unit="kPa", passed=low[0] >= -tol,
        reason=(f"at {at(low[1])} the pressure {fmt(low[3])} kPa was {fmt(-low[0])} kPa below saturated steam at "
                f"{fmt(low[2])} °C ({fmt(saturation_pressure_kpa(low[2]))} kPa): superheated steam or a "
                f"temperature sensor reading high") if low[0] < -tol else
               f"pressure never more than {fmt(tol)} kPa below saturated steam (lowest {fmt(low[0])} kPa)")
    above = Criterion(
        name="no_non_condensable_gas", measured=round(high[0], 2), limit=f"<= +{fmt(tol)} kPa ({limit})",
        unit="kPa", passed=high[0] <= tol,
        reason=(f"at {at(high[1])} the pressure {fmt(high[3])} kPa was {fmt(high[0])} kPa above saturated steam "
                f"at {fmt(high[2])} °C: air or other non-condensable gas in the chamber") if high[0] > tol else
               f"pressure never more than {fmt(tol)} kPa above saturated steam (highest {fmt(high[0])} kPa)")
    return [below, above]



def plausible(p: SteamParameters) -> dict[str, tuple[float, float, str]]:
    """Readings a steam sterilizer can physically produce."""
    return {p.temperature_field: (-20.0, 200.0, "°C"), p.pressure_field: (0.0, 1000.0, "kPa")}


def plot(p: SteamParameters) -> list[PlotField]:
    """Chamber temperature with the plateau band, and pressure."""
    return [(p.temperature_field, {"warn_low": p.sterilization_temp_c - p.band_minus_k,
                                   "warn_high": p.sterilization_temp_c + p.band_plus_k}), (p.pressure_field, {})]


PROCESS = CycleProcess(name="steam", parameters=SteamParameters, evaluate=lambda p, trace, _: evaluate_steam(p, trace),
                       plausible=plausible, coverage_fields=lambda p: [p.temperature_field, p.pressure_field],
                       plot=plot)
