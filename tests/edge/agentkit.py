"""Test kit for end-to-end agent tests: a machine file, an agent file, the agent as a real
process (so it can be kill -9'd), an MQTT publisher and exact InfluxDB counts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

import waiting

ROOT = Path(__file__).resolve().parents[2]
AMTRACE_EDGE = [sys.executable, "-m", "edge.cli"]
N_SIGNALS = 12


def machine_yaml(machine_id: str, mqtt_port: int, *, topic: str | None = None,
                 limits_on: str | None = None) -> dict:
    """An MQTT machine whose snapshot carries N_SIGNALS float values under values.s<i>."""
    signals = []
    for i in range(N_SIGNALS):
        sig = {"name": f"s{i}", "source": {"path": f"s{i}"}, "measurement": "e2e_process",
               "field": f"f{i}", "unit": "degC", "type": "float"}
        if limits_on == f"s{i}":
            sig["limits"] = {"warn_high": 100.0, "alarm_high": 200.0}
        signals.append(sig)
    return {
        "id": machine_id, "kind": "furnace", "manufacturer": "Test", "model": "T1", "serial": "0001",
        "connection": {"type": "mqtt", "host": "127.0.0.1", "port": mqtt_port,
                       "topic": topic or f"amtrace/test/{machine_id}/telemetry"},
        "signals": signals,
    }


def write_agent(tmp: Path, *, machines: list[dict], influx_url: str, database: str,
                budget_bytes: int = 256 * 1024 * 1024, api: str = "v1", extra_influx: dict | None = None) -> Path:
    """Write machines/*.yaml and agent.yaml under tmp; return the agent file."""
    mdir = tmp / "machines"
    mdir.mkdir(parents=True, exist_ok=True)
    for m in machines:
        (mdir / f"{m['id']}.yaml").write_text(yaml.safe_dump(m))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    influx = {"api": api, "url": influx_url, "database": database, "bucket": database,
              "max_backoff_s": 1.0, "timeout_s": 5.0, **(extra_influx or {})}
    cfg = {"id": "test-edge", "machines_dir": str(mdir), "state_dir": str(tmp / "state"),
           "influx": influx, "outbox": {"budget_bytes": budget_bytes, "group_commit_ms": 5},
           "http": {"host": "127.0.0.1", "port": port}}
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class AgentProcess:
    """`amtrace-edge run` as a child process, with its local API."""

    def __init__(self, config: Path):
        self.config = config
        self.cfg = yaml.safe_load(config.read_text())
        self.proc: subprocess.Popen | None = None
        self.log = config.parent / "agent.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.cfg['http']['port']}"

    def start(self, timeout: float = 30) -> "AgentProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*AMTRACE_EDGE, "run", "-c", str(self.config)], cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"agent did not serve /healthz:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL: no flush, no clean shutdown."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def api(self, method: str, path: str, body=None):
        """Call the local API with the agent's token."""
        token = (Path(self.cfg["state_dir"]) / "api-token").read_text().strip()
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def status(self) -> dict:
        return self.api("GET", "/status")


def snapshot(i: int, ts_ms: int, hot: bool = False) -> bytes:
    """Message i: N_SIGNALS distinct values, machine timestamp ts_ms."""
    values = {f"s{k}": round(20.0 + i * 0.001 + k, 6) for k in range(N_SIGNALS)}
    if hot:
        values["s0"] = 150.0
    return json.dumps({"ts": ts_ms, "seq": i, "values": values}).encode()


class Publisher:
    """A paho QoS 1 publisher that waits for every PUBACK."""

    def __init__(self, port: int, client_id: str = "test-publisher"):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payloads, wait: bool = True) -> None:
        infos = [self.client.publish(topic, p, qos=1) for p in payloads]
        if wait:
            for info in infos:
                info.wait_for_publish(timeout=30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def influx_count(influx, db: str, where: str, measurement: str = "e2e_process") -> int:
    """Exact number of field values in measurement matching where (sum over all fields)."""
    res = influx.query(f'SELECT count(*) FROM "{measurement}" WHERE {where}', db=db)
    series = res["results"][0].get("series", [])
    return sum(v for s in series for v in s["values"][0][1:] if isinstance(v, int))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    """tests/waiting.py's rule, polling more slowly: these predicates query InfluxDB or the agent."""
    return waiting.wait_until(predicate, timeout, what, interval)


