"""Release gate under concurrent load: a real uvicorn server on loopback, more requests at once than it
has request threads; every one answered, every decision stored once and chained once in the audit trail."""

from __future__ import annotations

import asyncio
import threading

import httpx
import localstack
import pytest
import uvicorn
from sqlalchemy import func, select

from server.models import AuditEntry, GateDecision

# More than the 40 request threads of a server process, so requests queue for threads and for the
# database's write lock at the same time (where the gate used to stall for SQLite's 30 s busy timeout).
CONCURRENT = 60


@pytest.fixture(scope="module")
def served(app):
    """The module's app behind a real uvicorn HTTP server on a free loopback port."""
    port = localstack.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    localstack.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


async def _ask_at_once(base: str, headers: dict, body: dict, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        return await asyncio.gather(*(client.post("/api/v1/gate/decisions", headers=headers, json=body)
                                      for _ in range(n)))


def _count(app, statement) -> int:
    with app.state.sessionmaker() as session:
        return session.scalar(statement)


def test_concurrent_decisions_all_answered_recorded_and_chained(plant, app, served):
    ctx = plant.ready(devices=2)
    plant.identify(ctx)
    body = {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
            "operator_id": plant.uid("operator")}
    head_before = plant.call("GET", "/audit/verify", "quality_engineer")["head_seq"]

    responses = asyncio.run(_ask_at_once(served, ctx["machine"]["agent"], body, CONCURRENT))

    assert [r.status_code for r in responses] == [200] * CONCURRENT, {r.text for r in responses}
    answers = [r.json() for r in responses]
    assert all(a["allowed"] is True and a["reasons"] == [] for a in answers)
    ids = {a["decision_id"] for a in answers}
    assert len(ids) == CONCURRENT
    job = str(ctx["job"]["id"])
    assert _count(app, select(func.count()).select_from(GateDecision)
                  .where(GateDecision.job_id == ctx["job"]["id"])) == CONCURRENT
    actions = [e["action"] for e in plant.call(
        "GET", f"/audit/entries?record_type=job&record_id={job}&limit=1000", "quality_engineer")]
    assert actions.count("gate_decision") == CONCURRENT
    # Only the first allowed decision releases the job, however the requests interleave.
    assert actions.count("job_released") == 1
    assert plant.call("GET", f"/jobs/{job}", "operator")["state"] == "released"
    # Every new entry is in the chain, gap-free, each linked to the one before: each decision's entry (which seals
    # the decision row itself) and, for the one that released the job, its entry and the seal of the job row.
    assert _count(app, select(func.count()).select_from(AuditEntry)
                  .where(AuditEntry.seq > head_before, AuditEntry.action == "rows_sealed")) == 1
    assert _count(app, select(func.count()).select_from(AuditEntry)
                  .where(AuditEntry.seq > head_before)) == CONCURRENT + 2
    verified = plant.call("GET", "/audit/verify", "quality_engineer")
    assert verified["ok"] is True and verified["breaks"] == []
    assert verified["head_seq"] == head_before + CONCURRENT + 2


def test_concurrent_refusals_each_give_every_reason(plant, served):
    ctx = plant.ready()
    plant.call("POST", f"/materials/lots/{ctx['lot']['id']}/status", "quality_engineer",
               json={"status": "quarantined", "reason": "oxygen content out of spec"})
    plant.identify(ctx, "operator2")
    body = {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": "ab" * 32,
            "operator_id": plant.uid("operator2")}

    responses = asyncio.run(_ask_at_once(served, ctx["machine"]["agent"], body, CONCURRENT))

    assert [r.status_code for r in responses] == [200] * CONCURRENT
    expected = [
        {"code": "build_file_not_approved", "message": f"Build file (SHA-256 abababababab…) does not match any "
                                                       f"approved file of job {ctx['job']['id']}"},
        {"code": "material_lot_invalid", "message": f"Material lot {ctx['lot']['lot_number']} is quarantined"},
        {"code": "operator_not_authorised", "message": f"Operator Olga Operator is not authorised on machine "
                                                       f"{ctx['machine']['id']}"}]
    assert all(r.json()["allowed"] is False and r.json()["reasons"] == expected for r in responses)
    assert plant.call("GET", f"/jobs/{ctx['job']['id']}", "operator")["state"] == "planned"


def test_a_worker_with_a_queue_asks_clients_to_reconnect_and_an_idle_one_keeps_them(plant, app, served):
    """Keep-alive connections stay with the worker process that accepted them; under a queue the gate answers
    with Connection: close so that agents reconnect (to a less busy worker), and never when it is idle."""
    from server.gate.router import SHED_CONNECTIONS_AT

    ctx = plant.ready()
    plant.identify(ctx)
    body = {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
            "operator_id": plant.uid("operator")}

    alone = [httpx.post(f"{served}/api/v1/gate/decisions", headers=ctx["machine"]["agent"], json=body, timeout=30)
             for _ in range(3)]
    assert [r.status_code for r in alone] == [200] * 3
    assert all(r.headers.get("connection", "keep-alive").lower() != "close" for r in alone)

    crowd = asyncio.run(_ask_at_once(served, ctx["machine"]["agent"], body, 4 * SHED_CONNECTIONS_AT))
    assert [r.status_code for r in crowd] == [200] * len(crowd)
    shed = [r for r in crowd if r.headers.get("connection", "").lower() == "close"]
    # One gate thread, all asked at once: most wait behind others, and those are told to reconnect.
    assert len(crowd) // 2 <= len(shed) < len(crowd)
    assert all(r.json()["allowed"] is True for r in shed)  # the answer itself is given in full
    assert app.state.gate_in_flight == 0

    refused = httpx.post(f"{served}/api/v1/gate/decisions", headers=ctx["machine"]["agent"],
                         json={**body, "machine_id": "another-machine"}, timeout=30)
    assert refused.status_code == 403 and app.state.gate_in_flight == 0  # an error leaves no count behind
