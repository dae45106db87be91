"""The walk of docs/requirements.md (issue 20): every door of a device's way × every requirement that applies
there. A device goes through every stage; before each door (start, complete, accept; for delivery the dispatch
of its list) each requirement that applies is broken, the door must refuse with that requirement's reason, the
cause is removed, and only then does the device go through. The gate is walked the same way before the job's
first build. The doors the walk covers for each requirement are checked against the table, so a rule added to
one and not the other fails here.

Cycle doors (cycle start/complete) and the edge are walked in their own tests: tests/server/stages/test_competence.py,
tests/server/stages/test_nonconformity_scopes.py, tests/server/test_device_walk.py."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import text

from server.models import utcnow
from stagekit import PASSWORD, step_of
from test_requirements_table import _rows

STAGES = ("build", "post_processing", "cleaning", "sterilization", "inspection", "release", "delivery")
PERFORM = {"build": "operator", "post_processing": "operator", "cleaning": "operator", "sterilization": "operator",
           "inspection": "quality_engineer", "release": "quality_engineer", "delivery": "production_manager"}
ACCEPT = {"build": "production_manager", "post_processing": "production_manager", "cleaning": "quality_engineer",
          "sterilization": "quality_engineer", "inspection": "quality_engineer2", "release": "quality_engineer2",
          "delivery": "clinician"}
# Where the walk breaks each requirement: (door, stage); the gate has no stage. A delivery is started and
# completed only by dispatching its list, so its start/complete door is "dispatch".
STAGE_DOORS = {(d, s) for s in STAGES if s != "delivery" for d in ("start", "complete", "accept")} | {
    ("dispatch", "delivery"), ("accept", "delivery")}
WALKED = {
    8: {("start", s) for s in STAGES[1:] if s != "delivery"} | {("dispatch", "delivery")} | {
        ("accept", "inspection"), ("accept", "release")},  # where a performer's role could accept: not themself
    9: {("accept", s) for s in STAGES} | {("gate", None)},
    14: {("start", "build"), ("complete", "build"), ("gate", None)},
    15: {(d, s) for d, s in STAGE_DOORS if d in ("start", "dispatch")} | {("gate", None)},
    16: STAGE_DOORS | {("gate", None)},
    17: {("start", "delivery"), ("complete", "delivery"), ("accept", "delivery")},
}


def _door_kinds(where: str) -> set[str]:
    """The door kinds a table cell names: gate, stage start / complete / accept."""
    kinds = {"gate"} if re.search(r"\bgate\b", where.replace("release gate", "gate")) else set()
    for group in re.findall(r"stage ((?:start|complete|accept)(?:/(?:start|complete|accept))*)", where):
        kinds |= {f"stage {d}" for d in group.split("/")}
    return kinds


def _walked_kinds(r: int) -> set[str]:
    return {"gate" if d == "gate" else f"stage {'start' if d == 'dispatch' else d}" for d, _ in WALKED[r]} | (
        {"stage complete"} if ("dispatch", "delivery") in WALKED[r] and r in (15, 16) else set())


def test_the_walk_covers_the_doors_the_table_names_for_each_requirement():
    table = {int(row[0]): row[3] for row in _rows()}
    for r in WALKED:
        assert _walked_kinds(r) >= _door_kinds(table[r]), (r, table[r])


class Walk:
    """One device on its way, and the ways to break each requirement at a door and to mend it again."""

    def __init__(self, plant):
        self.plant = plant
        self.ctx = plant.ready()
        self.code = self.ctx["job"]["devices"][0]["device_code"]
        self.mid = self.ctx["machine"]["id"]
        self.shipment: dict | None = None
        self.walked: set[tuple[int, str, str | None]] = set()

    # --- the doors -----------------------------------------------------------------------------------------

    def door(self, door: str, stage: str, who: str | None = None):
        """Knock: the raw response of the door (not asserted)."""
        p = self.plant
        if door == "dispatch":
            if self.shipment is None:
                self.shipment = p.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [self.code]})
            return p.client.post(f"/api/v1/shipments/{self.shipment['id']}/dispatch", headers=p.h(who or "production_manager"),
                                 json={"password": PASSWORD})
        step = step_of(p, self.code, stage)
        body = {"start": None, "complete": {"result": f"{stage} done", "password": PASSWORD},
                "accept": {"judgement": "complete and conforming", "password": PASSWORD}}[door]
        who = who or (ACCEPT if door == "accept" else PERFORM)[stage]
        return p.client.post(f"/api/v1/stages/steps/{step['id']}/{door}", headers=p.h(who), json=body)

    def refused(self, r: int, door: str, stage: str | None, response, code: str, words: str) -> None:
        body = response.json()
        assert response.status_code in (403, 409) and body["code"] == code and words in body["detail"], \
            (r, door, stage, response.status_code, body)
        self.walked.add((r, door, stage))

    # --- breaking and mending each requirement ----------------------------------------------------------------

    def nonconformity(self) -> dict:
        return self.plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
            "kind": "other", "description": "walk: found at this door", "device_code": self.code})

    def disposition(self, nc: dict) -> None:
        self.plant.call("POST", f"/nonconformities/{nc['id']}/disposition", "quality_engineer",
                        json={"disposition": "use_as_is", "rationale": "walk: no effect", "password": PASSWORD})

    def quarantine(self, lot: bool) -> None:
        p, lot_id = self.plant, self.ctx["lot"]["id"]
        body = ({"status": "quarantined", "reason": "walk: supplier notice"} if lot else
                {"status": "released", "reason": "walk: notice withdrawn", "password": PASSWORD})
        p.call("POST", f"/materials/lots/{lot_id}/status", "quality_engineer", json=body)

    def overdue(self, stage: str) -> None:
        step = step_of(self.plant, self.code, stage)
        past = utcnow() - timedelta(hours=1)
        with self.plant.app.state.engine.begin() as conn:  # time passes beyond the step's deadline
            conn.execute(text("UPDATE stage_steps SET deadline = :d WHERE id = :i"),
                         {"d": past.replace(tzinfo=None) if conn.dialect.name == "sqlite" else past, "i": step["id"]})

    def assess(self, stage: str) -> None:
        step = step_of(self.plant, self.code, stage)
        self.plant.call("POST", f"/stages/steps/{step['id']}/impact-assessment", "production_manager",
                        json={"assessment": "walk: one hour late, no effect on the device", "password": PASSWORD})

    def revoke(self) -> None:
        p = self.plant
        [auth] = [a for a in p.call("GET", f"/users/{p.uid('operator')}/machine-authorisations", "production_manager")
                  if a["machine_id"] == self.mid and a["revoked_at"] is None]
        p.call("POST", f"/machine-authorisations/{auth['id']}/revoke", "production_manager",
               json={"reason": "walk: training expired"})

    # --- one door, every requirement that applies there ------------------------------------------------------

    def through(self, door: str, stage: str) -> None:
        """Break each requirement that applies at this door, see it refused, mend it; then go through."""
        applies = {r for r, doors in WALKED.items() if (door, stage) in doors}
        if door == "dispatch":
            self.on_its_own()
        if 16 in applies:
            nc = self.nonconformity()
            self.refused(16, door, stage, self.door(door, stage), "stage_refused", f"open nonconformity {nc['id']}")
            self.disposition(nc)
        if 15 in applies:
            self.quarantine(True)
            self.refused(15, door, stage, self.door(door, stage), "stage_refused", "is quarantined")
            self.quarantine(False)
        if 14 in applies and door == "start":
            self.refused(14, door, stage, self.door(door, stage, who="operator2"), "operator_not_authorised",
                         f"Olga Operator is not authorised on machine {self.mid}")
        if 14 in applies and door == "complete":
            self.revoke()
            self.refused(14, door, stage, self.door(door, stage), "operator_not_authorised",
                         f"Otto Operator is not authorised on machine {self.mid}")
            self.plant.authorise(self.mid)
        if 9 in applies:
            self.overdue(stage)
            self.refused(9, door, stage, self.door(door, stage), "stage_refused", "record an impact assessment first")
            self.assess(stage)
        if 8 in applies and door == "accept":
            self.refused(8, door, stage, self.door(door, stage, who=PERFORM[stage]), "stage_refused",
                         "the person who performed a step cannot accept it")
        if 17 in applies and door == "accept":
            self.refused(17, door, stage, self.door(door, stage, who="clinician2"), "not_case_clinician",
                         "Only the clinician of case")
        response = self.door(door, stage)
        assert response.status_code == 200, (door, stage, response.text)

    def on_its_own(self) -> None:
        """R17: a delivery is never started or completed on its own through the stage endpoints."""
        step = step_of(self.plant, self.code, "delivery")
        r = self.door("start", "delivery")
        self.refused(17, "start", "delivery", r, "delivery_needs_list", "put it on a delivery list")
        r = self.door("complete", "delivery")  # not started: refused as out of state, and never by-passes the list
        assert r.status_code == 409 and step_of(self.plant, self.code, "delivery")["state"] == step["state"]
        self.walked.add((17, "complete", "delivery"))

    def before_accepting(self, stage: str) -> None:
        """R8: the next stage cannot start while this one is not accepted (delivery: its list not dispatched)."""
        nxt = STAGES[STAGES.index(stage) + 1] if stage != "delivery" else None
        if nxt is None:
            return
        if nxt == "delivery":
            # A list takes released devices only: the release is not accepted yet.
            r = self.plant.client.post("/api/v1/shipments", headers=self.plant.h("production_manager"),
                                       json={"device_codes": [self.code]})
            self.refused(8, "dispatch", nxt, r, "shipment_refused", "release completed")
            return
        self.refused(8, "start", nxt, self.door("start", nxt), "stage_out_of_order", "has not been accepted")


def test_every_door_refuses_what_each_requirement_forbids_and_opens_once_it_is_mended(plant):
    plant.person("clinician2", username="walk.clinician", full_name="Dr. Walk Other", role="clinician")
    walk = Walk(plant)
    ctx = walk.ctx
    # The gate, before the job's first build: each requirement broken, refused with its reason, mended.
    gate = lambda **kw: plant.gate(ctx, **kw)  # noqa: E731
    assert gate(operator="operator2")["reasons"][0]["code"] == "operator_not_authorised"
    walk.walked.add((14, "gate", None))
    walk.quarantine(True)
    assert [r["code"] for r in gate()["reasons"]] == ["material_lot_invalid"]
    walk.quarantine(False)
    walk.walked.add((15, "gate", None))
    nc = plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "kind": "other", "description": "walk: machine drift", "machine_id": walk.mid})
    assert [r["code"] for r in gate()["reasons"]] == ["open_nonconformity"]
    walk.disposition(nc)
    walk.walked.add((16, "gate", None))
    plant.call("POST", f"/cases/{ctx['case']['id']}/surgery-date", "clinician", json={
        "surgery_date": str((utcnow() + timedelta(days=1)).date()), "reason": "walk: surgery brought forward",
        "password": PASSWORD})
    assert [r["code"] for r in gate()["reasons"]] == ["case_deadline_passed"]
    plant.call("POST", f"/cases/{ctx['case']['id']}/surgery-date", "clinician", json={
        "surgery_date": str((utcnow() + timedelta(days=30)).date()), "reason": "walk: surgery date restored",
        "password": PASSWORD})
    walk.walked.add((9, "gate", None))
    assert gate()["allowed"] is True

    for stage in STAGES:
        if stage == "delivery":
            walk.through("dispatch", stage)
        else:
            walk.through("start", stage)
            walk.through("complete", stage)
        walk.before_accepting(stage)
        walk.through("accept", stage)
    assert plant.call("GET", f"/devices/{walk.code}", "operator")["state"] == "delivered"
    expected = {(r, d, s) for r, doors in WALKED.items() for d, s in doors}
    assert walk.walked == expected, sorted(expected ^ walk.walked, key=str)
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True
