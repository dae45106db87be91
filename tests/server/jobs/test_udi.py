"""GS1 UDI: check digits against published examples, both string forms, and every rule that refuses."""

from __future__ import annotations

from datetime import date

import pytest

from server.jobs.udi import GS, Udi, UdiError, gtin_check_digit, gtin14, parse, validate_gtin


@pytest.mark.parametrize("gtin", [
    "09506000134352",  # GS1 General Specifications example
    "04006381333931",  # EAN-13 4006381333931, padded
    "00012345678905",  # UPC-A 012345678905, padded
    "10614141000415",  # GS1 US example (01)10614141000415
])
def test_published_gtins_are_valid(gtin):
    assert validate_gtin(gtin) is None
    assert gtin_check_digit(gtin[:-1]) == int(gtin[-1])


def test_wrong_check_digit_is_named():
    assert validate_gtin("09506000134353") == "GTIN 09506000134353 has check digit 3, expected 2"
    assert validate_gtin("9506000134352") == "GTIN '9506000134352' must be 14 digits"
    assert gtin14("4006381333931") == "04006381333931"


def test_both_forms_round_trip():
    u = Udi(gtin="09506000134352", production_date=date(2026, 11, 26), expiry_date=date(2031, 11, 30),
            lot="J42", serial="AMT-2026-000001")
    assert u.human_readable() == "(01)09506000134352(11)261126(17)311130(10)J42(21)AMT-2026-000001"
    assert u.element_string() == "010950600013435211261126173111301" + "0J42" + GS + "21AMT-2026-000001"
    today = date(2026, 11, 26)
    assert parse(u.human_readable(), today) == u
    assert parse(u.element_string(), today) == u
    assert parse("]d2" + u.element_string().replace(GS, "|"), today) == u


def test_day_00_means_end_of_month():
    assert parse("(01)09506000134352(17)280200(21)S1", date(2026, 1, 1)).expiry_date == date(2028, 2, 29)


@pytest.mark.parametrize("text, message", [
    ("(01)09506000134353(21)S1", "GTIN 09506000134353 has check digit 3, expected 2"),
    ("(01)0950600013435(21)S1", "AI (01) GTIN must have 14 characters, got 13"),
    ("(01)09506000134352(17)261332(21)S1", "AI (17) expiration date has month 13"),
    ("(01)09506000134352(17)260231(21)S1", "AI (17) expiration date has day 31, month 02 has 28 days"),
    ("(01)09506000134352(21)" + "A" * 21, "AI (21) serial must be 1 to 20 characters of GS1 set 82, got '" +
     "A" * 21 + "'"),
    ("(01)09506000134352(10)LOT#1", "AI (10) lot must be 1 to 20 characters of GS1 set 82, got 'LOT#1'"),
    ("(01)09506000134352", "a UDI production identifier needs a lot (10) or a serial (21)"),
    ("(21)S1", "AI (01) GTIN is missing"),
    ("(01)09506000134352(99)X", "AI (99) is not supported in a device UDI here"),
    ("(01)09506000134352(21)A(21)B", "AI (21) serial appears twice"),
])
def test_invalid_udis_are_refused_with_the_rule(text, message):
    with pytest.raises(UdiError) as e:
        parse(text, date(2026, 11, 26))
    assert str(e.value) == message
