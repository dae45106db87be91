"""Retention dates: calendar arithmetic and the two-year floor (ISO 13485 §4.2.5, 21 CFR 820.180)."""

from __future__ import annotations

from datetime import date

from server.retention.service import add_years, retain_until
from server.settings import RetentionRule, Settings


def test_years_are_calendar_years_and_29_february_moves_to_28():
    assert add_years(date(2026, 12, 4), 30) == date(2056, 12, 4)
    assert add_years(date(2028, 2, 29), 1) == date(2029, 2, 28)
    assert add_years(date(2026, 1, 1), 0.5) == date(2026, 7, 3)  # half of 365.25 days, rounded


def test_lifetime_plus_extra_but_never_less_than_two_years_from_release():
    assert retain_until(date(2026, 12, 4), RetentionRule(lifetime_years=25, extra_years=5)) == date(2056, 12, 4)
    # A surgical guide used once: lifetime 0, nothing extra; still two years from release.
    assert retain_until(date(2026, 12, 4), RetentionRule(lifetime_years=0)) == date(2028, 12, 4)


def test_rules_per_family_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("AMTRACE_RETENTION_FAMILIES", '{"guide": {"lifetime_years": 0.1}}')
    s = Settings(database_url="sqlite:///x.db")
    assert s.retention_families == {"guide": RetentionRule(lifetime_years=0.1, extra_years=0.0)}
    assert (s.retention_lifetime_years, s.retention_extra_years) == (30.0, 2.0)
