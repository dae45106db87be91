"""Validated windows of each post-processing, cleaning and sterilization process (the recipe parameters).

Each recipe version stores one of these models (each defined with its process in server/cycles/processes/);
evaluation reads the version recorded with the cycle.
Defaults are typical values (regulatory.md 20-25, unconfirmed); each plant sets its validated values."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.cycles.processes import PROCESSES
from server.cycles.processes.cleaning import CleaningParameters, ResidueLimit
from server.cycles.processes.ethylene_oxide import EthyleneOxideParameters
from server.cycles.processes.heat_treatment import HeatTreatmentParameters
from server.cycles.processes.radiation import RadiationParameters
from server.cycles.processes.steam import SteamParameters
from server.limits import TEXT_MAX

__all__ = ["CleaningParameters", "EthyleneOxideParameters", "HeatTreatmentParameters", "PROCESS_NAMES",
           "RadiationParameters", "RecipeEnvelope", "RecipeParameters", "ResidueLimit", "SteamParameters",
           "parse_parameters"]


# Built from the process map: a new process is its module plus one line in processes/__init__.py.
RecipeParameters = Annotated[Union[tuple(p.parameters for p in PROCESSES.values())], Field(discriminator="process")]

PROCESS_NAMES = tuple(PROCESSES)


class RecipeEnvelope(BaseModel):
    """Wrapper used to validate stored or submitted parameters by their process."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    parameters: RecipeParameters

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "RecipeEnvelope":
        for name, value in self.parameters:
            if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
                raise ValueError(f"{name}: the low end {value[0]} is above the high end {value[1]}")
        return self


def parse_parameters(data: dict) -> RecipeParameters:
    """Validate recipe parameters (raises pydantic.ValidationError naming the field)."""
    return RecipeEnvelope.model_validate({"parameters": data}).parameters
