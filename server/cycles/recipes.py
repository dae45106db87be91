"""Validated windows of each post-processing, cleaning and sterilization process (the recipe parameters).

Each recipe version stores one of these models; evaluation reads the version recorded with the cycle.
Defaults are typical values (regulatory.md 20-25, unconfirmed); each plant sets its validated values."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.limits import TEXT_MAX


class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    measurement: str = Field(description="InfluxDB measurement the machine's signals are written to")
    max_gap_s: float = Field(default=5.0, gt=0, description=(
        "Longest gap between two samples still counted as continuous; a longer gap ends a hold or "
        "exposure and earns no lethality (what happened in it is unknown)"))


class SteamParameters(_Window):
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


class EthyleneOxideParameters(_Window):
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


class RadiationParameters(_Window):
    """Radiation sterilization: minimum and maximum dose measured by dosimeters against the validated dose."""

    process: Literal["radiation"] = "radiation"
    measurement: str = Field(default="irradiation", description="Measurement of the dosimeter readings")
    dose_field: str = Field(default="dose_kgy", description="Absorbed dose per dosimeter, kGy")
    sterilization_dose_kgy: float = Field(gt=0, description="Validated sterilization dose: the minimum, e.g. 25 kGy")
    max_acceptable_dose_kgy: float = Field(gt=0, description="Maximum dose the device is validated to tolerate")


class HeatTreatmentParameters(_Window):
    """Stress relief or HIP: ramp rate, hold band and time, atmosphere, cooling."""

    process: Literal["heat_treatment"] = "heat_treatment"
    measurement: str = Field(default="heat_treatment", description="Measurement of the furnace's signals")
    temperature_field: str = Field(default="load_temp_c", description="Load (part) temperature, °C")
    hold_temp_c: float = Field(gt=0, description="Hold temperature, e.g. 800 °C stress relief, 920 °C HIP")
    hold_band_k: float = Field(default=10.0, gt=0, description="Allowed deviation from the hold temperature, ± K")
    min_hold_s: float = Field(gt=0, description="Minimum continuous time within the hold band")
    max_ramp_k_per_min: float = Field(gt=0, description="Fastest allowed heating rate")
    rate_window_s: float = Field(default=60.0, gt=0, description="Window over which heating/cooling rates are taken")
    # Residual oxygen judges vacuum and argon alike (titanium picks up oxygen when hot); a vacuum-pressure
    # field can be named instead, but argon backfill for cooling starts while the load is still in the band.
    atmosphere_field: str = Field(default="oxygen_ppm", description="Atmosphere signal judged during the hold")
    atmosphere_max: float = Field(description="Highest allowed atmosphere value during the hold (e.g. 20 ppm O2)")
    atmosphere_unit: str = Field(default="ppm", description="Unit of the atmosphere signal")
    max_cooling_k_per_min: float = Field(gt=0, description="Fastest allowed cooling rate after the hold")
    max_unload_temp_c: float = Field(description="The load must be at or below this temperature at the end")


class ResidueLimit(BaseModel):
    """A residue test required after cleaning and its acceptance limit."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    test: str = Field(min_length=1, description="Test name, e.g. protein_ug_cm2, toc_ppm")
    max: float = Field(description="Highest accepted result")
    unit: str = Field(description="Unit of the result")


class CleaningParameters(_Window):
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


RecipeParameters = Annotated[
    Union[SteamParameters, EthyleneOxideParameters, RadiationParameters, HeatTreatmentParameters,
          CleaningParameters],
    Field(discriminator="process")]

PROCESSES = ("steam", "ethylene_oxide", "radiation", "heat_treatment", "cleaning")


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
