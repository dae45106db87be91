"""The plot of a completed process cycle: the signals its verdict is judged on, with the recipe's limits drawn.

Used by the DHR (server.history.dhr) and by the summary stored at release (server.history.summaries).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.cycles.service import parameters_of
from server.history import service
from server.history.influx import InfluxQL
from server.history.schemas import PlotSeries
from server.models import CycleRecipe, ProcessCycle

# Signals plotted for each cycle process (the ones its verdict is judged on).
CYCLE_PLOT_FIELDS = {
    "steam": ("temperature_field", "pressure_field"),
    "ethylene_oxide": ("concentration_field", "humidity_field", "temperature_field"),
    "radiation": ("dose_field",),
    "heat_treatment": ("temperature_field", "atmosphere_field"),
    "cleaning": ("temperature_field", "conductivity_field"),
}



def _recipe_limits(params, field_attr: str) -> dict[str, float]:
    """Limits drawn on a cycle plot for the plotted field."""
    p = params
    if field_attr == "temperature_field" and p.process == "steam":
        return {"warn_low": p.sterilization_temp_c - p.band_minus_k, "warn_high": p.sterilization_temp_c + p.band_plus_k}
    if field_attr == "temperature_field" and p.process == "heat_treatment":
        return {"warn_low": p.hold_temp_c - p.hold_band_k, "warn_high": p.hold_temp_c + p.hold_band_k}
    if field_attr == "temperature_field" and p.process == "cleaning":
        return {"warn_low": p.wash_temperature_c[0], "warn_high": p.wash_temperature_c[1]}
    if field_attr == "temperature_field" and p.process == "ethylene_oxide":
        return {"warn_low": p.temperature_c[0], "warn_high": p.temperature_c[1]}
    if field_attr == "concentration_field":
        return {"warn_low": p.concentration_mg_l[0], "warn_high": p.concentration_mg_l[1]}
    if field_attr == "humidity_field":
        return {"warn_low": p.humidity_pct_rh[0], "warn_high": p.humidity_pct_rh[1]}
    if field_attr == "dose_field":
        return {"warn_low": p.sterilization_dose_kgy, "warn_high": p.max_acceptable_dose_kgy}
    if field_attr == "atmosphere_field":
        return {"warn_high": p.atmosphere_max}
    if field_attr == "conductivity_field":
        return {"warn_high": p.max_final_conductivity_us_cm}
    return {}


def cycle_plot(session: Session, influx: InfluxQL, *, cycle: ProcessCycle, device_code: str) -> list[PlotSeries]:
    """A completed cycle's plot (the signals its verdict is judged on, with the recipe's limits) from InfluxDB."""
    params = parameters_of(session.get(CycleRecipe, cycle.recipe_id))
    fields = [(params.measurement, getattr(params, a), getattr(params, a), "", _recipe_limits(params, a))
              for a in CYCLE_PLOT_FIELDS[params.process]]
    return service.plot_series(influx, machine_id=cycle.machine_id, device_code=device_code, start=cycle.started_at,
                               end=cycle.ended_at, fields=fields)
