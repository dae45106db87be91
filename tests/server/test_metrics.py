"""The server's Prometheus endpoint: who may scrape, route templates (not ids) as labels, and gauges read from the
records, parsed by prometheus_client's own parser (not by ours)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_need_the_scrape_token_or_an_administrator(plant):
    r = plant.client.get("/metrics")
    assert (r.status_code, r.json()["code"]) == (401, "not_authenticated")
    r = plant.client.get("/metrics", headers=plant.h("production_manager"))
    assert (r.status_code, r.json()["code"]) == (403, "role_not_allowed")
    r = plant.client.get("/metrics", headers=plant.h("operator") | {})
    assert r.status_code == 403
    settings = plant.app.state.settings
    settings.metrics_token = "prometheus-scrape-token-0123456789"
    try:
        assert plant.client.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-token-0123456789"}
                                ).status_code == 200
        assert plant.client.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-token-012345678X"}
                                ).status_code == 401
    finally:
        settings.metrics_token = None
    assert plant.client.get("/metrics", headers=plant.h("admin")).status_code == 200


def test_gate_decisions_requalifications_and_requests_by_route_template(plant):
    before = _samples(plant.client.get("/metrics", headers=plant.h("admin")).text)
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"]
    m = plant.machine()
    plant.call("GET", f"/machines/{m['id']}", "operator")
    plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {}})
    after = _samples(plant.client.get("/metrics", headers=plant.h("admin")).text)
    key = ("amtrace_gate_decisions_total", (("outcome", "allowed"),))
    assert after[key] == before.get(key, 0) + 1
    assert ("amtrace_qualification_scopes", (("state", "qualified"),)) in after
    routes = {dict(labels).get("route") for (name, labels) in after if name == "amtrace_http_requests_total"}
    assert "/machines/{machine_id}" in routes and "/gate/decisions" in routes and not any(m["id"] in r for r in routes if r)
    agents = {dict(labels)["agent"] for (name, labels) in after if name == "amtrace_agent_last_heartbeat_age_seconds"}
    assert f"agent-{m['id']}" in agents
