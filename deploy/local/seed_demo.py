"""Demo records on the server, made through its API as the people of a plant would make them:
users for each role, the machines of configs/machines, an agent token, a qualified LPBF printer,
a case with an approved design (two signatures), a job with three devices.

Used by stack.py; the passwords are demo passwords printed at the end of `make demo`."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx
import yaml

DEMO_BADGE, DEMO_PIN = "B-1001", "2468"  # demo only; printed at the end of `make demo`
PEOPLE = {
    # username: (full name, role)
    "ada.admin": ("Ada Admin", "admin"),
    "otto.operator": ("Otto Operator", "operator"),
    "paula.manager": ("Paula Manager", "production_manager"),
    "quentin.quality": ("Quentin Quality", "quality_engineer"),
    "rita.reviewer": ("Rita Reviewer", "quality_engineer"),  # the second person who accepts inspection and release
    "dana.designer": ("Dana Designer", "design_engineer"),
    "clara.clinician": ("Dr. Clara Clinician", "clinician"),
}


class Api:
    """A logged-in view of the server API per person."""

    def __init__(self, url: str, password: str):
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=30)
        self.password = password
        self.headers: dict[str, dict] = {}

    def login(self, username: str) -> None:
        r = self.http.post("/auth/token", data={"username": username, "password": self.password})
        r.raise_for_status()
        self.headers[username] = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def request(self, who: str, method: str, path: str, **kw) -> httpx.Response:
        """One request as who; an access token that expired (they last 15 minutes) is renewed once."""
        r = self.http.request(method, path, headers=self.headers[who], **kw)
        if r.status_code == 401 and r.json().get("code") in ("token_expired", "token_stale"):
            self.login(who)
            r = self.http.request(method, path, headers=self.headers[who], **kw)
        return r

    def call(self, who: str, method: str, path: str, **kw):
        r = self.request(who, method, path, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} as {who}: {r.status_code} {r.text}")
        return r.json() if r.content else None


def seed_people_and_machines(url: str, password: str, machines_dir: Path) -> dict:
    """Users, machines, operator authorisations and one agent token for all machines."""
    api = Api(url, password)
    api.login("ada.admin")
    for username, (name, role) in PEOPLE.items():
        if username != "ada.admin":
            # A password an administrator sets must be replaced by its owner before they sign anything: each
            # demo person does that at once (with the demo password, so the README's logins work).
            temporary = f"{password}-from-admin"
            api.call("ada.admin", "POST", "/users", json={"username": username, "full_name": name, "role": role,
                                                          "password": temporary})
            first = api.http.post("/auth/token", data={"username": username, "password": temporary})
            first.raise_for_status()
            r = api.http.post("/auth/password", json={"current_password": temporary, "new_password": password},
                              headers={"Authorization": f"Bearer {first.json()['access_token']}"})
            r.raise_for_status()
    for username in PEOPLE:
        if username != "ada.admin":
            api.login(username)
    # The operator's kiosk badge (badge number + PIN), as the admin hands it out.
    api.call("ada.admin", "PUT", f"/users/{_uid(api, 'otto.operator')}/badge",
             json={"badge_number": DEMO_BADGE, "pin": DEMO_PIN})
    today = date.today()
    machine_ids = []
    for f in sorted(machines_dir.glob("*.yaml")):
        m = yaml.safe_load(f.read_text())
        site = (m.get("site") or "Plant 1").split(",")
        api.call("paula.manager", "POST", "/machines", json={
            "id": m["id"], "manufacturer": m["manufacturer"], "model": m["model"], "serial_number": m["serial"],
            "site": site[0].strip(), "room": ",".join(site[1:]).strip() or "-",
            "calibration_due": str(today + timedelta(days=120)), "maintenance_due": str(today + timedelta(days=45))})
        api.call("paula.manager", "POST", f"/users/{_uid(api, 'otto.operator')}/machine-authorisations",
                 json={"machine_id": m["id"], "training_reference": f"TR-{m['id'].upper()}"})
        machine_ids.append(m["id"])
    agent = api.call("ada.admin", "POST", "/agents", json={"name": "demo-edge", "machine_ids": machine_ids})
    return {"api": api, "agent_token": agent["token"], "machine_ids": machine_ids}


def _uid(api: Api, username: str) -> int:
    users = api.call("ada.admin", "GET", "/users")
    return next(u["id"] for u in users if u["username"] == username)


def seed_build(api: Api, *, machine_id: str, stl: bytes, wait_s: float = 60) -> dict:
    """Qualify the printer (once the agent reported its identity), approve a design, create a job."""
    deadline = time.monotonic() + wait_s
    while api.call("quentin.quality", "GET", f"/machines/{machine_id}").get("software_revision") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not report the identity of {machine_id} within {wait_s:.0f} s")
        time.sleep(0.5)
    today = date.today()
    scope = api.call("quentin.quality", "POST", "/qualification/scopes", json={
        "machine_id": machine_id, "process": "LPBF", "material": "Ti-6Al-4V ELI", "product_family": "acetabular cup"})
    req = api.call("quentin.quality", "POST", "/qualification/requalifications", json={
        "scope_id": scope["id"], "risk_decision": "full", "rationale": "Initial IQ/OQ/PQ after installation",
        "protocol": "QP-LPBF-007 rev C", "valid_until": str(today + timedelta(days=365))})
    rq = f"/qualification/requalifications/{req['id']}"
    api.call("quentin.quality", "PUT", f"{rq}/criteria", json={"criteria": [
        {"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 860, "unit": "MPa", "min_count": 1},
        {"artefact_type": "density_cube", "property": "relative_density_pct", "min": 99.5, "unit": "%"}]})
    api.call("quentin.quality", "POST", f"{rq}/criteria/lock")
    for art in ({"artefact_type": "tensile_bar", "label": "TB-1", "x_mm": 20, "y_mm": 20, "z_mm": 0,
                 "orientation": "Z", "property": "uts_mpa", "measured_value": 931.0, "unit": "MPa"},
                {"artefact_type": "density_cube", "label": "DC-1", "x_mm": 230, "y_mm": 230, "z_mm": 0,
                 "orientation": "XY", "property": "relative_density_pct", "measured_value": 99.8, "unit": "%"}):
        api.call("quentin.quality", "POST", f"{rq}/artefacts", json=art)
    api.call("quentin.quality", "POST", f"{rq}/approve", json={"password": api.password, "material_supplier": "AP&C"})
    lot = api.call("paula.manager", "POST", "/materials/lots", json={
        "lot_number": f"TI64-{uuid.uuid4().hex[:6].upper()}", "material": "Ti-6Al-4V ELI", "supplier": "AP&C",
        "certificate_ref": "CoA-2026-118", "lot_type": "virgin", "reuse_count": 0, "reuse_limit": 5})
    lot = api.call("quentin.quality", "POST", f"/materials/lots/{lot['id']}/status", json={
        "status": "released", "reason": "incoming inspection: certificate of analysis checked",
        "password": api.password})
    case = api.call("clara.clinician", "POST", "/cases", json={
        "institution": "University Hospital", "surgery_date": str(today + timedelta(days=21)),
        "imaging_date": str(today - timedelta(days=9))})
    design = api.call("dana.designer", "POST", f"/cases/{case['id']}/designs", json={
        "name": "Acetabular cup, left", "process": "LPBF", "material": "Ti-6Al-4V ELI",
        "product_family": "acetabular cup", "regulatory_category": "patient_matched", "gtin": "09506000134352",
        "intended_use": "total hip arthroplasty, cementless acetabular component (patient-matched)",
        "anatomical_site": "left acetabulum"})
    it = api.call("dana.designer", "POST", f"/designs/{design['id']}/iterations",
                  data={"software_name": "Materialise Mimics", "software_version": "26.0", "change_note": "initial"},
                  files=[("files", ("cup.stl", stl, "model/stl"))])
    for who in ("dana.designer", "clara.clinician"):
        api.call(who, "POST", f"/designs/iterations/{it['id']}/signatures", json={"password": api.password})
    job = api.call("paula.manager", "POST", "/jobs", json={
        "machine_id": machine_id, "material_lot_id": lot["id"],
        "devices": [{"design_iteration_id": it["id"], "position": {"x_mm": 60.0 * n + 40, "y_mm": 80.0}} for n in range(3)],
        "coupons": [{"label": "TB-1"}, {"label": "DC-1"}],
        "build_parameters": {"layer_thickness_um": 30, "scan_strategy": "SS-12"}})
    return {"job": job, "iteration": it, "scope": scope, "case": case}


def release(api: Api, *, machine_id: str, job_id: int, sha256: str) -> dict:
    """The operator asks the release gate for the job."""
    return api.call("otto.operator", "POST", "/gate/decisions", json={
        "machine_id": machine_id, "job_id": job_id, "build_file_sha256": sha256})
