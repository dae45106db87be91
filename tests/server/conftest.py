"""Server test fixtures: a migrated database per test module (SQLite file and PostgreSQL), the app, and a
`plant` helper that sets up people, machines, qualified scopes, approved designs and jobs through the API."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.validation.hashing import sha256_bytes
from server.app import create_app
from server.auth.service import create_user
from server.db import migrate
from server.security import SYSTEM
from server.settings import Settings
from routekit import ROUTES_WITHOUT_CYCLES

PASSWORD = "correct-horse-battery"
ROLES = ("admin", "operator", "production_manager", "quality_engineer", "design_engineer", "clinician")
FULL_NAMES = {"admin": "Ada Admin", "operator": "Otto Operator", "production_manager": "Paula Manager",
              "quality_engineer": "Quentin Quality", "design_engineer": "Dana Designer",
              "clinician": "Dr. Clara Clinician", "operator2": "Olga Operator", "quality_engineer2": "Quinn Second"}
TODAY = date.today()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path_factory) -> str:
    """A fresh empty database for the test module, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
    pg = request.getfixturevalue("postgres")
    name = f"amtrace_{uuid.uuid4().hex[:10]}"
    pg.create_database(name)
    return pg.dsn(name)


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory) -> Settings:
    """Settings for tests: light Argon2 parameters (set via settings, not stubbed)."""
    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), routes=ROUTES_WITHOUT_CYCLES)


@pytest.fixture(scope="module")
def app(settings):
    """The app on a database built by the Alembic migrations."""
    migrate(settings.database_url)
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    """HTTP client for the app."""
    with TestClient(app) as c:
        yield c


class Plant:
    """Builds the records a test needs through the API, as the real users would."""

    def __init__(self, client: TestClient, app):
        self.client = client
        self.app = app
        self.users: dict[str, dict[str, Any]] = {}
        with app.state.sessionmaker() as session, session.begin():
            for key in (*ROLES, "operator2", "quality_engineer2"):
                role = key.rstrip("2")
                u = create_user(session, actor=SYSTEM, username=key.replace("_", "."), full_name=FULL_NAMES[key],
                                role=role, password=PASSWORD)
                self.users[key] = {"id": u.id, "username": u.username, "role": role}
        for key, u in self.users.items():
            u["headers"] = self.login(u["username"], PASSWORD)

    def person(self, key: str, *, username: str, full_name: str, role: str) -> dict:
        """One more person, created by the administrator through the API, who then sets their own password (an
        administrator's password must be changed before signing); kept under key like the seeded people."""
        if key not in self.users:
            u = self.call("POST", "/users", "admin", 201, json={
                "username": username, "full_name": full_name, "role": role, "password": "set-by-the-admin"})
            first = self.login(username, "set-by-the-admin")
            self.call("POST", "/auth/password", first, json={"current_password": "set-by-the-admin",
                                                              "new_password": PASSWORD})
            self.users[key] = {"id": u["id"], "username": username, "role": role,
                               "headers": self.login(username, PASSWORD)}
        return self.users[key]

    def login(self, username: str, password: str) -> dict[str, str]:
        """Log in and return the Authorization header."""
        r = self.client.post("/api/v1/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def h(self, key: str) -> dict[str, str]:
        """Headers of a seeded user ('operator', 'quality_engineer', …)."""
        return self.users[key]["headers"]

    def uid(self, key: str) -> int:
        """User id of a seeded user."""
        return self.users[key]["id"]

    def call(self, method: str, path: str, who: str | dict, expect: int = 200, **kw) -> Any:
        """Call the API as a user key or with headers; assert the status; return the JSON body."""
        headers = who if isinstance(who, dict) else self.h(who)
        r = self.client.request(method, "/api/v1" + path, headers=headers, **kw)
        if (r.status_code == 401 and expect != 401 and not isinstance(who, dict) and r.json().get("code") == "token_stale"
                and self.users[who]["username"]):
            # A browser test logged this person out, which ends every session of theirs, this helper's too:
            # log in again as they would. Tests of revocation use explicit headers, which are never renewed.
            self.users[who]["headers"] = self.login(self.users[who]["username"], PASSWORD)
            r = self.client.request(method, "/api/v1" + path, headers=self.users[who]["headers"], **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    # --- building blocks ---------------------------------------------------------------------------

    def machine(self, *, software: str = "4.2.1", firmware: str = "1.0", build_prep: str = "Magics 27") -> dict:
        """A registered machine with an agent that has reported its identity; operator authorised."""
        mid = f"M-{uuid.uuid4().hex[:8]}"
        m = self.call("POST", "/machines", "production_manager", 201, json={
            "id": mid, "manufacturer": "EOS", "model": "M 290", "serial_number": f"SN-{mid}", "site": "Plant 1",
            "room": "AM-1", "calibration_due": str(TODAY + timedelta(days=90)),
            "maintenance_due": str(TODAY + timedelta(days=60))})
        agent = self.call("POST", "/agents", "admin", 201, json={"name": f"agent-{mid}", "machine_ids": [mid]})
        m["agent"] = {"Authorization": f"Bearer {agent['token']}"}
        m["agent_id"] = agent["id"]
        self.report_identity(m, software=software, firmware=firmware, build_prep=build_prep)
        self.call("POST", f"/users/{self.uid('operator')}/machine-authorisations", "production_manager", 201,
                  json={"machine_id": mid, "training_reference": "TR-EOS-001"})
        return m

    def authorise(self, machine_id: str, who: str = "operator") -> dict:
        """Grant a person a training authorisation on a machine (R14: who may perform steps on it)."""
        return self.call("POST", f"/users/{self.uid(who)}/machine-authorisations", "production_manager", 201,
                         json={"machine_id": machine_id, "training_reference": f"TR-{machine_id}"})

    def report_identity(self, m: dict, *, software: str, firmware: str = "1.0",
                        build_prep: str = "Magics 27") -> dict:
        """The machine's agent reports identity and revisions."""
        return self.call("POST", f"/agents/machines/{m['id']}/identity", m["agent"], json={
            "manufacturer": "EOS", "model": "M 290", "serial_number": m["serial_number"],
            "software_revision": software, "hardware_revision": "HW-B", "firmware_revision": firmware,
            "build_prep_software": build_prep})

    def qualify(self, scope_id: int, *, kind_expected: str = "initial", risk: str = "full",
                supplier: str | None = "AP&C", values: tuple[float, float] = (905.0, 99.7)) -> dict:
        """Run a (re)qualification with locked criteria and passing artefacts; QE signs the approval."""
        req = self.call("POST", "/qualification/requalifications", "quality_engineer", 201, json={
            "scope_id": scope_id, "risk_decision": risk, "rationale": "IQ/OQ/PQ per protocol",
            "protocol": "QP-LPBF-007 rev C", "valid_until": str(TODAY + timedelta(days=365))})
        assert req["kind"] == kind_expected
        if risk != "none":
            self.call("PUT", f"/qualification/requalifications/{req['id']}/criteria", "quality_engineer", json={
                "criteria": [
                    {"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 860, "unit": "MPa",
                     "min_count": 1},
                    {"artefact_type": "density_cube", "property": "relative_density_pct", "min": 99.5,
                     "unit": "%"}]})
            self.call("POST", f"/qualification/requalifications/{req['id']}/criteria/lock", "quality_engineer")
            self.call("POST", f"/qualification/requalifications/{req['id']}/artefacts", "quality_engineer", 201,
                      json={"artefact_type": "tensile_bar", "label": "TB-1", "x_mm": 20, "y_mm": 20, "z_mm": 0,
                            "orientation": "Z", "property": "uts_mpa", "measured_value": values[0], "unit": "MPa"})
            self.call("POST", f"/qualification/requalifications/{req['id']}/artefacts", "quality_engineer", 201,
                      json={"artefact_type": "density_cube", "label": "DC-1", "x_mm": 230, "y_mm": 230,
                            "z_mm": 0, "orientation": "XY", "property": "relative_density_pct",
                            "measured_value": values[1], "unit": "%"})
        return self.call("POST", f"/qualification/requalifications/{req['id']}/approve", "quality_engineer",
                         json={"password": PASSWORD, "material_supplier": supplier})

    def scope(self, machine_id: str, *, qualified: bool = True, family: str = "acetabular cup") -> dict:
        """A scope on the machine for LPBF / Ti-6Al-4V ELI / family, qualified unless told."""
        s = self.call("POST", "/qualification/scopes", "quality_engineer", 201, json={
            "machine_id": machine_id, "process": "LPBF", "material": "Ti-6Al-4V ELI", "product_family": family})
        if qualified:
            self.qualify(s["id"])
            s = self.call("GET", f"/qualification/scopes/{s['id']}", "quality_engineer")
            assert s["state"] == "qualified"
        return s

    def lot(self, *, reuse_count: int = 0, reuse_limit: int = 5, supplier: str = "AP&C") -> dict:
        """A material lot of Ti-6Al-4V ELI, registered by stores and released by a quality engineer (signed)."""
        lot = self.call("POST", "/materials/lots", "production_manager", 201, json={
            "lot_number": f"LOT-{uuid.uuid4().hex[:8]}", "material": "Ti-6Al-4V ELI", "supplier": supplier,
            "certificate_ref": "CoA-2026-118", "lot_type": "virgin", "reuse_count": reuse_count,
            "reuse_limit": reuse_limit})
        return self.call("POST", f"/materials/lots/{lot['id']}/status", "quality_engineer", json={
            "status": "released", "reason": "incoming inspection: CoA checked", "password": PASSWORD})

    def case(self, *, surgery_in_days: int = 30) -> dict:
        """A case with a pseudonymous patient reference, opened by the seeded clinician for themself."""
        return self.call("POST", "/cases", "clinician", 201, json={
            "patient_ref": f"P-{uuid.uuid4().hex[:8].upper()}", "institution": "University Hospital",
            "surgery_date": str(TODAY + timedelta(days=surgery_in_days)),
            "imaging_date": str(TODAY - timedelta(days=7))})

    def design(self, case_id: int, *, family: str = "acetabular cup", gtin: str | None = "09506000134352") -> dict:
        """A patient-matched design for the case."""
        return self.call("POST", f"/cases/{case_id}/designs", "design_engineer", 201, json={
            "name": f"Cup {uuid.uuid4().hex[:4]}", "process": "LPBF", "material": "Ti-6Al-4V ELI",
            "product_family": family, "regulatory_category": "patient_matched", "gtin": gtin,
            "intended_use": "total hip arthroplasty, cementless acetabular component", "anatomical_site": "left acetabulum"})

    def iteration(self, design_id: int, *, content: bytes | None = None, sign: bool = True,
                  note: str = "initial design") -> dict:
        """Upload an iteration (one build file); design engineer and clinician sign unless told not to."""
        content = content or f"solid cup {uuid.uuid4().hex}\nendsolid\n".encode()
        it = self.call("POST", f"/designs/{design_id}/iterations", "design_engineer", 201,
                       data={"software_name": "Materialise Mimics", "software_version": "26.0",
                             "change_note": note},
                       files=[("files", ("cup.stl", content, "model/stl"))])
        assert it["files"][0]["sha256"] == sha256_bytes(content)
        it["content"] = content
        if sign:
            for who in ("design_engineer", "clinician"):
                self.call("POST", f"/designs/iterations/{it['id']}/signatures", who, 201,
                          json={"password": PASSWORD})
        return it

    def job(self, machine_id: str, lot_id: int, iteration_ids: list[int], coupons: int = 0) -> dict:
        """A job with one device per iteration id."""
        return self.call("POST", "/jobs", "production_manager", 201, json={
            "machine_id": machine_id, "material_lot_id": lot_id,
            "devices": [{"design_iteration_id": i, "position": {"x_mm": 50.0 * n, "y_mm": 50.0}}
                        for n, i in enumerate(iteration_ids)],
            "coupons": [{"label": f"TB-{n}"} for n in range(coupons)],
            "build_parameters": {"layer_thickness_um": 30, "scan_strategy": "SS-12"}})

    def ready(self, *, devices: int = 1, family: str = "acetabular cup", **machine_kw) -> dict:
        """Everything for an allowed gate decision: qualified machine, lot, approved design, job."""
        m = self.machine(**machine_kw)
        scope = self.scope(m["id"], family=family)
        lot = self.lot()
        case = self.case()
        design = self.design(case["id"], family=family)
        it = self.iteration(design["id"])
        job = self.job(m["id"], lot["id"], [it["id"]] * devices)
        return {"machine": m, "scope": scope, "lot": lot, "case": case, "design": design, "iteration": it,
                "job": job, "sha": it["files"][0]["sha256"]}

    def identify(self, ctx: dict, operator: str = "operator") -> dict:
        """The operator scans the context's job at the kiosk: the edge agent may then name them at the gate."""
        return self.call("POST", f"/kiosk/jobs/{ctx['job']['id']}/presence", operator, 201)

    def gate(self, ctx: dict, *, who: str | dict | None = None, sha: str | None = None,
             operator: str = "operator") -> dict:
        """Ask the release gate for the context's job, as its agent by default, naming an operator who has just
        identified at the kiosk for the job (an operator must have, for an agent to name them)."""
        if self.users.get(operator, {}).get("role") == "operator" and who != operator:
            self.identify(ctx, operator)
        return self.call("POST", "/gate/decisions", who or ctx["machine"]["agent"], json={
            "machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": sha or ctx["sha"],
            "operator_id": self.uid(operator)})


@pytest.fixture(scope="module")
def plant(client, app) -> Plant:
    """People seeded and logged in; helpers to build the rest."""
    return Plant(client, app)
