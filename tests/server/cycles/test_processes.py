"""The cycle-process map: every process is complete, and recipes, evaluation and plots all come from it."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from server.cycles.criteria import Trace
from server.cycles.evaluation import evaluate
from server.cycles.processes import PROCESSES, process_of
from server.cycles.recipes import RecipeParameters, parse_parameters

MINIMAL = {
    "steam": {"sterilization_temp_c": 134, "min_hold_s": 180, "pressure_tolerance_kpa": 10, "min_f0_min": 15},
    "ethylene_oxide": {"min_exposure_s": 3600, "min_aeration_s": 7200},
    "radiation": {"sterilization_dose_kgy": 25, "max_acceptable_dose_kgy": 40},
    "heat_treatment": {"hold_temp_c": 800, "min_hold_s": 7200, "max_ramp_k_per_min": 10, "atmosphere_max": 20,
                       "max_cooling_k_per_min": 20, "max_unload_temp_c": 80},
    "cleaning": {"wash_temperature_c": [50, 60], "min_wash_s": 600, "max_final_conductivity_us_cm": 5},
}


def test_the_recipe_union_is_exactly_the_process_map():
    assert set(MINIMAL) == set(PROCESSES)
    for name, body in MINIMAL.items():
        p = parse_parameters({"process": name, **body})
        assert type(p) is PROCESSES[name].parameters and process_of(p) is PROCESSES[name]
    assert TypeAdapter(RecipeParameters).json_schema()["discriminator"]["propertyName"] == "process"


@pytest.mark.parametrize("name", list(MINIMAL))
def test_each_process_names_real_fields_and_judges_an_empty_cycle_as_not_judgeable(name):
    p = parse_parameters({"process": name, **MINIMAL[name]})
    proc = PROCESSES[name]
    fields = {v for v in p.model_dump().values() if isinstance(v, str)}
    for field, limits in proc.plot(p):
        assert field in fields and set(limits) <= {"warn_low", "warn_high"}
    assert set(proc.plausible(p)) <= fields and set(proc.coverage_fields(p)) <= fields
    verdict = evaluate(parameters=p, trace=Trace(times=[]))
    assert verdict.process == name and not verdict.passed
    assert not any(c.name == "evaluation_error" for c in verdict.criteria), verdict.criteria
