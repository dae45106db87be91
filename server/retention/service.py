"""Retention of a released device's records (ISO 13485 §4.2.5: at least the lifetime of the device as the
manufacturer defines it, and not less than two years from release; 21 CFR 820.180: the design and expected life
of the device, at least two years from release).

When a release is accepted, the device gets `retain_until` = max(release + lifetime + extra years,
release + 2 years), from the rule of its job's product family (AMTRACE_RETENTION_FAMILIES) or the default
(AMTRACE_RETENTION_LIFETIME_YEARS, AMTRACE_RETENTION_EXTRA_YEARS). The date is stored once, in the acceptance's
transaction (a later change of the rules does not move dates already given; it is recorded in the audit trail).
Every record linked to the device (job, cycles, signatures, nonconformities, design iteration, material lot,
qualification evidence) is kept at least as long as the latest `retain_until` of its devices."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.models import Device, DeviceRetention, Job, utcnow
from server.security import Principal
from server.settings import RetentionRule
from server.stages import release_hooks

MINIMUM_YEARS = 2.0  # ISO 13485 §4.2.5, 21 CFR 820.180: never less than two years from release
BASIS = ("max(release + lifetime + extra years, release + 2 years): ISO 13485:2016 §4.2.5, 21 CFR 820.180(a)")


def add_years(day: date, years: float) -> date:
    """day plus years (whole years by the calendar, 29 February → 28 February; a fraction as 365.25-day years)."""
    whole = int(years)
    try:
        moved = day.replace(year=day.year + whole)
    except ValueError:  # 29 February into a year without one
        moved = day.replace(year=day.year + whole, day=28)
    return moved + timedelta(days=round((years - whole) * 365.25))


def rule_for(session: Session, product_family: str) -> tuple[RetentionRule, str]:
    """The rule of a product family, and where it came from."""
    settings = settings_of(session)
    if product_family in settings.retention_families:
        return settings.retention_families[product_family], f"product family {product_family}"
    return (RetentionRule(lifetime_years=settings.retention_lifetime_years,
                          extra_years=settings.retention_extra_years), "default rule")


def retain_until(released: date, rule: RetentionRule) -> date:
    """The end of retention for a device released on that day."""
    return max(add_years(released, rule.lifetime_years + rule.extra_years), add_years(released, MINIMUM_YEARS))


def on_release(session: Session, actor: Principal, device: Device, released_at: datetime) -> DeviceRetention:
    """Give the device its retention date (once) and record it."""
    family = session.get(Job, device.job_id).product_family
    rule, source = rule_for(session, family)
    kept = DeviceRetention(device_id=device.id, product_family=family, lifetime_years=rule.lifetime_years,
                           extra_years=rule.extra_years, released_at=released_at, rule=source,
                           retain_until=retain_until(released_at.date(), rule))
    session.add(kept)
    session.flush()
    record(session, actor=actor, action="retention_set", record_type="device", record_id=device.device_code,
           new={"retain_until": kept.retain_until.isoformat(), "product_family": family,
                "lifetime_years": rule.lifetime_years, "extra_years": rule.extra_years, "rule": source})
    return kept


def of_device(session: Session, device_id: int) -> DeviceRetention | None:
    """The device's retention, when it was released."""
    return session.scalar(select(DeviceRetention).where(DeviceRetention.device_id == device_id))


def _accepted(session: Session, actor: Principal, device: Device, _prepared) -> None:
    on_release(session, actor, device, utcnow())


release_hooks.subscribe(release_hooks.ReleaseSubscriber(
    name="retention", prepare=lambda session, device: None, accepted=_accepted))
