"""The steam-quality criterion's saturation pressure against published reference values, not our simulator."""

import pytest

from server.cycles.evaluation import saturation_pressure_kpa


@pytest.mark.parametrize("kelvin,mpa", [(300.0, 0.353658941e-2), (500.0, 0.263889776e1), (600.0, 0.123443146e2)])
def test_iapws_if97_verification_values(kelvin, mpa):
    """IAPWS-IF97 (2007 revision), table 35: region 4 saturation pressure verification values."""
    assert saturation_pressure_kpa(kelvin - 273.15) == pytest.approx(mpa * 1000, rel=1e-8)


@pytest.mark.parametrize("celsius,kpa", [(121.0, 205.0), (134.0, 304.0)])
def test_sterilization_practice_values(celsius, kpa):
    """The pressures sterilization practice (ISO 17665, EN 285) quotes for saturated steam at 121 °C and 134 °C."""
    assert saturation_pressure_kpa(celsius) == pytest.approx(kpa, abs=1.0)
