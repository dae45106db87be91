"""The plot of a completed process cycle: the signals its verdict is judged on, with the recipe's limits drawn.

Used by the DHR (server.history.dhr) and by the summary stored at release (server.history.summaries).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.cycles.processes import process_of
from server.cycles.service import parameters_of
from server.history import service
from server.timeseries.influx import InfluxQL
from server.history.schemas import PlotSeries
from server.models import CycleRecipe, ProcessCycle

def cycle_plot(session: Session, influx: InfluxQL, *, cycle: ProcessCycle, device_code: str) -> list[PlotSeries]:
    """A completed cycle's plot (the signals its verdict is judged on, with the recipe's limits) from InfluxDB."""
    params = parameters_of(session.get(CycleRecipe, cycle.recipe_id))
    # What is plotted, with which limits, is the process's own knowledge (server/cycles/processes/).
    fields = [(params.measurement, name, name, "", limits) for name, limits in process_of(params).plot(params)]
    return service.plot_series(influx, machine_id=cycle.machine_id, device_code=device_code, start=cycle.started_at,
                               end=cycle.ended_at, fields=fields)
