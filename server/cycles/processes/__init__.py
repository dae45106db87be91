"""The cycle processes, one module each; this map is the only place that lists them."""

from __future__ import annotations

from server.cycles.processes import cleaning, ethylene_oxide, heat_treatment, radiation, steam
from server.cycles.processes.base import CycleProcess
from server.settings import CYCLE_PROCESSES

PROCESSES: dict[str, CycleProcess] = {p.name: p for p in (
    steam.PROCESS,
    ethylene_oxide.PROCESS,
    radiation.PROCESS,
    heat_treatment.PROCESS,
    cleaning.PROCESS,
)}

# Settings validate route stages before any domain loads, so they keep the names; the two must agree.
if tuple(PROCESSES) != CYCLE_PROCESSES:
    raise TypeError(f"server.settings.CYCLE_PROCESSES {CYCLE_PROCESSES} differs from the process map "
                    f"{tuple(PROCESSES)}")
for _p in PROCESSES.values():
    if _p.parameters.model_fields["process"].default != _p.name:
        raise TypeError(f"cycle process {_p.name!r}: {_p.parameters.__name__}.process must default to {_p.name!r}")


def process_of(parameters) -> CycleProcess:
    """The process plugin of a recipe's parameters."""
    return PROCESSES[parameters.process]
