"""deploy/prometheus/ against the real Debian Prometheus: promtool accepts the scrape configuration and the alert
rules; a Prometheus on a loopback port scrapes a real server (with the scrape token) and a real agent, and the
agent-down rule fires once the agent is stopped (the same rules, their waiting times shortened to seconds)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "edge"))
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "tests" / "server" / "ui"))
from agentkit import AgentProcess, machine_yaml, write_agent  # noqa: E402
from uikit import UiServer  # noqa: E402

import localstack  # noqa: E402
from waiting import wait_until  # noqa: E402

CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "amtrace.yml"
TOKEN = "prometheus-test-scrape-token-0123456789"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_shipped_configuration_and_rules(tmp_path):
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0 and "SUCCESS: 13 rules found" in r.stdout, r.stdout + r.stderr
    # promtool also checks that the token file exists: the shipped file, with only that path moved here.
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / "amtrace.yml")
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "prometheus.yml").write_text(CONFIG.read_text().replace("/etc/prometheus/amtrace-metrics-token",
                                                                         str(tmp_path / "token")))
    r = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("expr: up{job=\"amtrace-agent\"} == 0", "expr: up{job=="))
    assert _promtool("check", "rules", str(broken)).returncode != 0, "promtool must be able to fail"


def test_audit_alert_rules_fire_on_a_failed_and_on_a_missing_verification(tmp_path):
    tests = ROOT / "deploy" / "prometheus" / "tests" / "audit_rules_test.yml"
    r = _promtool("test", "rules", str(tests))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # The same unit test with an intact verification: promtool must report the expected alert as missing.
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / "amtrace.yml")
    (tmp_path / "tests").mkdir()
    wrong = tests.read_text().replace("values: '1 1 0 0'", "values: '1 1 1 1'")
    assert wrong != tests.read_text()
    (tmp_path / "tests" / "wrong.yml").write_text(wrong)
    r = _promtool("test", "rules", str(tmp_path / "tests" / "wrong.yml"))
    assert r.returncode != 0 and "AmtraceAuditVerifyFailed" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.fixture
def server(tmp_path):
    s = UiServer(tmp_path / "server", env={"AMTRACE_METRICS_TOKEN": TOKEN})
    (tmp_path / "server").mkdir()
    s.start()
    yield s
    s.stop()


def test_prometheus_scrapes_server_and_agent_and_fires_agent_down(tmp_path, server, mosquitto, influxdb):
    influxdb.create_database("prom")
    agent = AgentProcess(write_agent(tmp_path / "agent", machines=[machine_yaml("washer-p1", mosquitto.port)],
                                     influx_url=influxdb.url, database="prom")).start()
    port = localstack.free_port()
    (tmp_path / "prom" / "rules").mkdir(parents=True)
    # The shipped rules with their `for:` waits shortened to seconds; the shipped scrape jobs with real targets.
    rules = re.sub(r"for: \d+m", "for: 2s", RULES.read_text())
    (tmp_path / "prom" / "rules" / "amtrace.yml").write_text(rules)
    (tmp_path / "prom" / "token").write_text(TOKEN)
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    jobs["amtrace-server"]["authorization"]["credentials_file"] = str(tmp_path / "prom" / "token")
    jobs["amtrace-server"]["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    jobs["amtrace-agent"]["static_configs"] = [{"targets": [f"127.0.0.1:{agent.cfg['http']['port']}"]}]
    (tmp_path / "prom" / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "prom" / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prom' / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'prom' / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        def targets():
            try:
                r = httpx.get(api + "/targets", timeout=2)
            except httpx.HTTPError:
                return None
            if r.status_code != 200:  # 503 "Service Unavailable" while Prometheus is still starting
                return None
            active = r.json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in active}
            return health if health == {"amtrace-server": "up", "amtrace-agent": "up"} else None
        wait_until(targets, 60, "both targets up in Prometheus", interval=0.5)

        def value(query: str):
            result = httpx.get(api + "/query", params={"query": query}, timeout=5).json()["data"]["result"]
            return result or None
        [decisions] = wait_until(lambda: value('amtrace_gate_decisions_total{outcome="allowed"}'), 30,
                                 "the server's gate decisions scraped", interval=0.5)
        assert decisions["metric"]["job"] == "amtrace-server"
        wait_until(lambda: value('amtrace_connection_up{machine="washer-p1"}'), 30, "the agent's metrics",
                   interval=0.5)

        def firing():
            alerts = httpx.get(api + "/alerts", timeout=2).json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "AmtraceAgentDown" and a["state"] == "firing"]
        time.sleep(3)
        assert not firing(), "no agent-down alert while the agent runs"
        agent.stop()
        [alert] = wait_until(firing, 60, "AmtraceAgentDown firing", interval=0.5)
        assert alert["labels"]["severity"] == "critical"
    finally:
        prom.terminate()
        prom.wait(20)
        log.close()
        agent.stop()
