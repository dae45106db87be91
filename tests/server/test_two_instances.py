"""Two `uvicorn server.app` processes on one PostgreSQL, as behind a load balancer: gate decisions sent to both at
once form one unbroken audit chain, and killing one instance with SIGKILL mid-stream loses no decision it answered."""

from __future__ import annotations

import asyncio
import time
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server.cli import main as cli_main
from server.models import GateDecision

sys.path.insert(0, str(Path(__file__).resolve().parent / "ui"))
from uikit import UiServer, sse_events  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url(postgres) -> str:
    """PostgreSQL only: several instances on one SQLite file is not a deployment amtrace supports."""
    name = f"amtrace_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    return postgres.dsn(name)


@pytest.fixture
def instances(tmp_path, database_url):
    """Instances A and B on the module's database."""
    started = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        started.append(UiServer(tmp_path / name, database_url=database_url).start())
    yield started
    for s in started:
        s.stop()


def _gate_request(plant) -> tuple[dict, dict]:
    ctx = plant.ready(devices=2)
    plant.identify(ctx)
    return ctx["machine"]["agent"], {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"],
                                     "build_file_sha256": ctx["sha"], "operator_id": plant.uid("operator")}


def _stored(plant, ids) -> set[int]:
    with plant.app.state.sessionmaker() as s:
        return set(s.scalars(select(GateDecision.id).where(GateDecision.id.in_(list(ids)))))


def _audit_verify(plant, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("AMTRACE_DATABASE_URL", plant.app.state.settings.database_url)
    monkeypatch.setenv("AMTRACE_FILE_STORE", plant.app.state.settings.file_store)
    code = cli_main(["audit", "verify", "--no-record"])
    return code, capsys.readouterr().out


def test_decisions_on_both_instances_form_one_chain(plant, instances, monkeypatch, capsys):
    headers, body = _gate_request(plant)
    a, b = instances

    async def both(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(*(c.post((a if i % 2 else b).url + "/api/v1/gate/decisions",
                                                 headers=headers, json=body) for i in range(n)))

    answers = asyncio.run(both(40))
    assert [r.status_code for r in answers] == [200] * 40, {r.text for r in answers}
    ids = {r.json()["decision_id"] for r in answers}
    assert all(r.json()["allowed"] for r in answers) and len(ids) == 40
    assert _stored(plant, ids) == ids
    code, out = _audit_verify(plant, monkeypatch, capsys)
    assert code == 0 and "audit trail intact" in out, out
    # The job was released once, by whichever instance answered first.
    entries = plant.call("GET", f"/audit/entries?record_type=job&record_id={body['job_id']}&limit=1000",
                         "quality_engineer")
    assert [e["action"] for e in entries].count("job_released") == 1


def test_killing_one_instance_loses_no_answered_decision(plant, instances, monkeypatch, capsys):
    headers, body = _gate_request(plant)
    a, b = instances
    answered: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post("/api/v1/gate/decisions", headers=headers, json=body)
                except httpx.TransportError as e:  # the instance died under the request: no answer, no claim
                    failed.append(type(e).__name__)
                    return
                assert r.status_code == 200, r.text
                answered.append(r.json()["decision_id"])

    workers = [threading.Thread(target=hammer, args=(a.url,)) for _ in range(4)]
    for w in workers:
        w.start()
    while len(answered) < 60:
        stop.wait(0.05)
    os.kill(a.proc.pid, signal.SIGKILL)  # in the middle of requests: some are cut before their answer
    for w in workers:
        w.join(timeout=30)
    a.proc.wait(timeout=10)
    assert len(failed) == len(workers), "every worker must have seen instance A go away"
    assert _stored(plant, answered) == set(answered)  # every answered decision is durable
    # B keeps deciding on the same chain, and the chain is unbroken by A's half-done transactions.
    with httpx.Client(base_url=b.url, timeout=30) as c:
        after = [c.post("/api/v1/gate/decisions", headers=headers, json=body) for _ in range(5)]
    assert [r.status_code for r in after] == [200] * 5
    code, out = _audit_verify(plant, monkeypatch, capsys)
    assert code == 0 and "audit trail intact" in out, out


def test_an_agent_reporting_to_a_shows_on_a_dashboard_streaming_from_b(plant, instances):
    a, b = instances
    m = plant.machine()
    report = {"connected": True, "state": "building", "phase": "PRINTING", "job": None, "layer": 7,
              "layers_total": 70, "software_revision": "4.2.1", "alerts": [], "updated_ns": time.time_ns()}
    with httpx.Client(timeout=30) as c, \
            c.stream("GET", b.url + "/api/v1/live/machines/stream", headers=plant.h("production_manager")) as r:
        events = sse_events(r)
        assert next(events)[0] == "snapshot"
        sent = time.monotonic()
        posted = c.post(a.url + "/api/v1/agents/heartbeat", headers=m["agent"],
                        json={"status": {"machines": {m["id"]: report}}})
        assert posted.status_code == 200, posted.text
        for name, data in events:
            if name == "machine" and data["machine_id"] == m["id"]:
                break
        took = time.monotonic() - sent
    assert (data["phase"], data["layer"]) == ("PRINTING", 7)
    assert took < 1.0, f"instance B showed instance A's report after {took:.2f} s"



def test_a_change_committed_elsewhere_wakes_an_agents_long_poll_on_b_at_once(plant, instances):
    """LISTEN/NOTIFY: a context change committed by another instance answers a long poll waiting on B without
    waiting for B's own re-read (every 5 s)."""
    _, b = instances
    m = plant.machine()
    url = f"{b.url}/api/v1/agents/machines/{m['id']}/context"
    with httpx.Client(timeout=60) as c:
        first = c.get(url, headers=m["agent"])
        assert first.status_code == 200, first.text
        answer: dict = {}

        def poll() -> None:
            r = c.get(url, headers=m["agent"], params={"wait_s": 30, "known": first.headers["ETag"]})
            answer.update(status=r.status_code, etag=r.headers.get("ETag"), at=time.monotonic(),
                          scopes=r.json().get("scopes"))

        waiting = threading.Thread(target=poll)
        waiting.start()
        time.sleep(1.0)  # the poll is waiting on B
        committed = time.monotonic()
        # Committed by the test's own app (another process's commit, as far as B is concerned).
        scope = plant.call("POST", "/qualification/scopes", "quality_engineer", 201, json={
            "machine_id": m["id"], "process": "LPBF", "material": "CoCr", "product_family": "knee"})
        waiting.join(40)
    assert answer["status"] == 200 and answer["etag"] != first.headers["ETag"]
    assert scope["id"] in [s["id"] for s in answer["scopes"]]
    took = answer["at"] - committed
    assert took < 3.0, f"B answered {took:.1f} s after the commit: woken by its re-read, not by the notification"
