"""Maintenance rules (issue 16): only configured kinds, the next due date computed from the machine's interval, an
override only by a supervisor with a reason, and requalifying kinds raising the trigger. An operator once cleared
"maintenance overdue" by logging a free-text kind with next_maintenance_due 2099-12-31."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from server.models import AuditEntry


def _log(plant, m: dict, who: str, expect: int = 201, **body) -> dict:
    return plant.call("POST", f"/machines/{m['id']}/maintenance", who, expect,
                      json={"description": "done as per work instruction WI-12", **body})


def test_the_kinds_are_the_configured_list(plant):
    kinds = {k["kind"]: k for k in plant.call("GET", "/machines/maintenance/kinds", "operator")}
    assert kinds["preventive_maintenance"]["preventive"] is True
    assert kinds["laser_replaced"]["requalifying"] is True and kinds["filter_change"]["requalifying"] is False
    m = plant.machine()
    r = _log(plant, m, "operator", 409, kind="anything_goes")
    assert r["code"] == "maintenance_kind_unknown" and "preventive_maintenance" in r["detail"]


def test_an_operator_cannot_choose_the_next_due_date(plant):
    m = plant.machine()
    r = _log(plant, m, "operator", 403, kind="filter_change", next_maintenance_due="2099-12-31")
    assert r["code"] == "maintenance_due_override"
    assert plant.call("GET", f"/machines/{m['id']}", "operator")["maintenance_due"] != "2099-12-31"


def test_preventive_maintenance_sets_the_due_date_from_the_interval(plant):
    m = plant.machine()
    plant.call("POST", f"/machines/{m['id']}/due-dates", "production_manager",
               json={"maintenance_interval_days": 90, "reason": "manufacturer's service plan, 90 days"})
    before = plant.call("GET", f"/machines/{m['id']}", "operator")["maintenance_due"]
    log = _log(plant, m, "operator", kind="filter_change")
    assert log["next_maintenance_due"] is None, "not the planned maintenance: the due date stays"
    assert plant.call("GET", f"/machines/{m['id']}", "operator")["maintenance_due"] == before
    log = _log(plant, m, "operator", kind="preventive_maintenance")
    expected = str(date.today() + timedelta(days=90))
    assert log["next_maintenance_due"] == expected and log["due_override_reason"] is None
    machine = plant.call("GET", f"/machines/{m['id']}", "operator")
    assert machine["maintenance_due"] == expected and machine["maintenance_interval_days"] == 90


def test_a_supervisor_overrides_the_due_date_with_a_reason_on_record(plant):
    m = plant.machine()
    r = _log(plant, m, "production_manager", 409, kind="preventive_maintenance", next_maintenance_due="2027-01-15")
    assert r["code"] == "override_reason_required"
    log = _log(plant, m, "production_manager", kind="preventive_maintenance", next_maintenance_due="2027-01-15",
               due_override_reason="service visit booked for 15 Jan; interval would fall in the shutdown")
    assert log["next_maintenance_due"] == "2027-01-15"
    assert plant.call("GET", f"/machines/{m['id']}", "operator")["maintenance_due"] == "2027-01-15"
    with plant.app.state.sessionmaker() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "maintenance_logged",
                                                   AuditEntry.record_id == m["id"])).one()
    assert "interval would fall in the shutdown" in entry.new_values and entry.actor == "user:production.manager"


def test_a_requalifying_kind_raises_the_trigger_whoever_logs_it(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    log = _log(plant, m, "operator", kind="recoater_replaced")
    assert log["requires_requalification"] is True
    scope = plant.call("GET", f"/qualification/scopes/{s['id']}", "quality_engineer")
    assert scope["state"] == "requalification_required"
