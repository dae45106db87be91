"""The agent's command line and local API as an engineer uses them: status, quarantine, assign,
release, check-config; who may call what."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from agentkit import ROOT, AgentProcess, Publisher, machine_yaml, snapshot, wait_until, write_agent

T0_MS = 1_767_225_600_000


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def agent(tmp_path_factory, mosquitto, influxdb):
    tmp = tmp_path_factory.mktemp("cli")
    influxdb.create_database("cli_test")
    m = machine_yaml("washer-t1", mosquitto.port)
    cfg = write_agent(tmp, machines=[m], influx_url=influxdb.url, database="cli_test")
    a = AgentProcess(cfg).start()
    a.topic, a.mqtt_port = m["connection"]["topic"], mosquitto.port
    yield a
    a.stop()


def test_assign_status_and_release_through_the_cli(agent):
    cfg = str(agent.config)
    out = cli("assign", "-c", cfg, "washer-t1", "--job", "WASH-9", "--device", "DEV-1", "--device", "DEV-2").stdout
    assert out.strip() == "machine washer-t1: job WASH-9 with 2 device(s): DEV-1, DEV-2"
    pub = Publisher(agent.mqtt_port, "cli-publisher")
    pub.publish(agent.topic, [snapshot(i, T0_MS + i) for i in range(5)])
    pub.close()
    wait_until(lambda: agent.status()["readings_in"] == 5 * 12, 30, "60 readings")
    status = cli("status", "-c", cfg).stdout
    assert "readings in          60" in status
    assert "washer-t1        mqtt   up    job WASH-9 (2 devices)" in status
    st = json.loads(cli("status", "-c", cfg, "--json").stdout)
    assert st["assignments"]["washer-t1"]["devices"] == ["DEV-1", "DEV-2"]
    assert cli("release", "-c", cfg, "washer-t1").stdout.strip() == "machine washer-t1: job WASH-9 ended"
    assert json.loads(cli("status", "-c", cfg, "--json").stdout)["assignments"]["washer-t1"] is None


def test_quarantine_lists_and_shows_raw_bytes(agent):
    pub = Publisher(agent.mqtt_port, "cli-bad-publisher")
    pub.publish(agent.topic, [b'{"ts": 1767225600000, "values": {"s1": NaN}}'])
    pub.close()
    wait_until(lambda: agent.status()["quarantined"] >= 1, 30, "a quarantined payload")
    listing = cli("quarantine", "-c", str(agent.config)).stdout
    assert listing.splitlines()[0] == "1 quarantined input(s)"
    entry = json.loads(cli("quarantine", "-c", str(agent.config), "--json").stdout)[0]
    assert entry["source"] == "mqtt" and entry["origin"] == agent.topic and "NaN" in entry["reason"]
    raw = subprocess.run([sys.executable, "-m", "edge.cli", "quarantine", "-c", str(agent.config), "--id",
                          str(entry["id"]), "--raw"], cwd=ROOT, capture_output=True, timeout=60).stdout
    assert raw.endswith(b'{"ts": 1767225600000, "values": {"s1": NaN}}')


def test_local_api_needs_the_token_except_health_and_metrics(agent):
    for path in ("/status", "/quarantine", "/assignments", "/machines/washer-t1/assignment"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(agent.base + path, timeout=5)
        assert e.value.code == 401, path
    bad = urllib.request.Request(agent.base + "/status", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=5)
    assert e.value.code == 401
    assert json.loads(urllib.request.urlopen(agent.base + "/healthz", timeout=5).read())["status"] == "ok"
    metrics = urllib.request.urlopen(agent.base + "/metrics", timeout=5).read().decode()
    assert 'amtrace_connection_up{machine="washer-t1",type="mqtt"} 1.0' in metrics
    assert "amtrace_outbox_full 0.0" in metrics


def test_unknown_machine_and_bad_assignment_are_refused_in_words(agent):
    done = cli("assign", "-c", str(agent.config), "nope-1", "--job", "J", "--device", "D", check=False)
    assert done.returncode != 0 and "machine nope-1 is not configured on this agent" in done.stderr
    done = cli("assign", "-c", str(agent.config), "washer-t1", "--job", "J 1", "--device", "D", check=False)
    assert done.returncode != 0 and "agent answered 422" in done.stderr


def test_check_config_names_file_and_field(tmp_path):
    (tmp_path / "bad-1.yaml").write_text("id: bad-1\nkind: toaster\n")
    done = cli("check-config", "--machines-dir", str(tmp_path), check=False)
    assert done.returncode == 2
    assert f"{tmp_path}/bad-1.yaml: invalid configuration" in done.stderr
    assert "  - kind: Input should be" in done.stderr
    good = cli("check-config", "--machines-dir", str(ROOT / "configs" / "machines")).stdout
    assert "lpbf-01.yaml: ok (lpbf_printer, opcua" in good


def test_agent_refuses_to_start_on_an_invalid_machine_file(tmp_path, influxdb):
    m = machine_yaml("broken-1", 1883)
    m["signals"][0]["limits"] = {"warn_high": 10, "alarm_high": 5}
    cfg = write_agent(tmp_path, machines=[m], influx_url=influxdb.url, database="never")
    done = cli("run", "-c", str(cfg), check=False)
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "broken-1.yaml" in done.stderr
    assert "signals.0.limits: Value error, alarm_high must not be below warn_high" in done.stderr


def test_assign_since_takes_a_relative_or_an_offset_time_and_refuses_a_naive_one():
    """A load booked late (a washer's log arrives after the program) starts when it went in, not now."""
    from edge.cli import _since_ns

    now = time.time_ns()
    assert abs(_since_ns("-30m") - (now - 1800 * 10**9)) < 5 * 10**9
    assert _since_ns("2026-12-04T09:30:00+01:00") == 1_796_373_000 * 10**9
    with pytest.raises(ValueError, match="no UTC offset"):
        _since_ns("2026-12-04T09:30:00")
    with pytest.raises(ValueError, match="neither"):
        _since_ns("yesterday")


def test_output_cut_off_by_a_closed_pipe_is_never_a_success():
    """`amtrace-edge verify … | head` exited 0 (which means "identical") when head stopped reading."""
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "protocols"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err


def test_status_finds_an_agent_that_picked_a_free_port(tmp_path, mosquitto, influxdb):
    """With http.port 0 the agent listens on a free port; status used to say it was not reachable."""
    import signal

    import yaml

    influxdb.create_database("cli_port0")
    cfg_path = write_agent(tmp_path, machines=[machine_yaml("washer-p0", mosquitto.port)], influx_url=influxdb.url,
                           database="cli_port0")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["http"]["port"] = 0
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = tmp_path / "state" / "api-port"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30, "the noted port")
        assert int(port_file.read_text()) > 0
        st = json.loads(cli("status", "-c", str(cfg_path), "--json").stdout)
        assert st["agent"] == "test-edge" and "washer-p0" in st["connections"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_machine_whose_jobs_come_from_the_server_refuses_a_local_assignment_unless_forced(
        tmp_path, mosquitto, influxdb, monkeypatch):
    """Issue 13: `assign lpbf-01 --job X --device AMT-1` on a server-managed machine was taken silently and tagged
    1.5 s of data with the wrong device code."""
    import yaml

    influxdb.create_database("cli_override")
    cfg_path = write_agent(tmp_path, machines=[machine_yaml("washer-srv", mosquitto.port)], influx_url=influxdb.url,
                           database="cli_override")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["server"] = {"url": "http://127.0.0.1:9", "interval_s": 5}  # configured, unreachable: still server-managed
    cfg_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("AMTRACE_AGENT_TOKEN", "test-token-not-used")
    agent = AgentProcess(cfg_path).start()
    try:
        refused = cli("assign", "-c", str(cfg_path), "washer-srv", "--job", "X", "--device", "AMT-1", check=False)
        assert refused.returncode != 0
        assert "takes its jobs and device codes from the server" in refused.stderr and "--force" in refused.stderr
        assert agent.api("GET", "/machines/washer-srv/assignment") is None  # nothing was booked
        short = cli("assign", "-c", str(cfg_path), "washer-srv", "--job", "X", "--device", "AMT-1", "--force",
                    "--reason", "why", check=False)
        assert short.returncode != 0  # a reason of substance, not a word
        done = cli("assign", "-c", str(cfg_path), "washer-srv", "--job", "X", "--device", "AMT-1", "--force",
                   "--reason", "server down during the night shift; job sheet 4471")
        assert "job X with 1 device(s): AMT-1" in done.stdout

        def override_events():
            res = influxdb.query("SELECT message, reason FROM amtrace_events WHERE kind='local_override'",
                                 db="cli_override")
            series = res.get("results", [{}])[0].get("series")
            return series[0]["values"] if series else []

        (event,) = wait_until(override_events, 30, "the override event")
        assert "overrides the server's job context" in event[1] and event[2].startswith("server down")
    finally:
        agent.stop()
