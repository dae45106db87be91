"""Test helpers for the MQTT connector tests: a real durable sink (SQLite), a publisher, a machine, waiting.

The sink is the consumer side, not the part under test: a small real implementation of ReadingSink
that stores in a SQLite file, so what it holds survives the test's own process being killed."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MachineConfig
from edge.readings import Event, MemoryJournal, OutboxFull


class SqliteSink(MemoryJournal):
    """ReadingSink storing readings, quarantined messages and events in one SQLite file (conditions and connector
    state in memory)."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        self.full = threading.Event()  # set: submit raises OutboxFull (back-pressure)
        self.block = threading.Event()  # set: submit never returns (the "crash before ack" child)
        self.fail: Exception | None = None  # set: submit raises this
        self.submits = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE IF NOT EXISTS readings (machine TEXT, signal TEXT, value TEXT, source_ts_ns INT,"
            " received_ns INT, quality TEXT, origin TEXT);"
            "CREATE TABLE IF NOT EXISTS quarantine (source TEXT, origin TEXT, raw BLOB, reason TEXT, machine TEXT);"
            "CREATE TABLE IF NOT EXISTS events (machine TEXT, kind TEXT, severity TEXT, message TEXT, fields TEXT);"
        )

    def submit(self, ingests, *, state=None) -> None:
        """Store all ingests in one transaction (and their extra events)."""
        if self.block.is_set():
            threading.Event().wait()  # forever: the process is killed while here
        if self.full.is_set():
            raise OutboxFull("outbox at its disk budget (test)")
        if self.fail is not None:
            raise self.fail
        rows = [(i.machine_id, r.signal, json.dumps(r.value), r.source_ts_ns, i.received_ns, r.quality, i.origin)
                for i in ingests for r in i.readings]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?)", rows)
            for i in ingests:
                for e in i.extra_events:
                    self._insert_event(e)
            self._db.execute("COMMIT")
            self.submits += 1
            self.keep_state(state)

    def quarantine(self, *, source: str, origin: str, raw: bytes, reason: str, machine_id: str | None = None) -> None:
        """Keep the malformed message with its reason."""
        with self._lock:
            self._db.execute("INSERT INTO quarantine VALUES (?,?,?,?,?)", (source, origin, raw, reason, machine_id))

    def event(self, event: Event) -> None:
        """Record an event."""
        with self._lock:
            self._insert_event(event)

    def _insert_event(self, e: Event) -> None:
        self._db.execute("INSERT INTO events VALUES (?,?,?,?,?)",
                         (e.machine_id, e.kind, e.severity, e.message, json.dumps(e.fields)))

    def rows(self, sql: str, *args) -> list[tuple]:
        """Run a query on the stored data."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def count(self, table: str) -> int:
        """Rows in one table."""
        return self.rows(f"SELECT count(*) FROM {table}")[0][0]

    def event_kinds(self) -> list[str]:
        """Kinds of the recorded events, in order."""
        return [k for (k,) in self.rows("SELECT kind FROM events ORDER BY rowid")]


sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/: also for child processes run from here
from waiting import wait_until  # noqa: E402,F401 - the one waiting rule (tests/waiting.py)


def machine(topic: str, port: int, *, protocol: str = "5", client_id: str | None = None, **conn) -> MachineConfig:
    """A small steam sterilizer on topic (status signals on topic + '/status')."""
    def sig(name, path, type_="float", topic_=None):
        src = {"path": path} if topic_ is None else {"path": path, "topic": topic_}
        return {"name": name, "source": src, "measurement": "sterilization", "field": name, "unit": "1",
                "type": type_}
    return MachineConfig.model_validate({
        "id": "sterilizer-01", "kind": "steam_sterilizer", "manufacturer": "Test", "model": "T", "serial": "1",
        "connection": {"type": "mqtt", "host": "127.0.0.1", "port": port, "protocol": protocol, "topic": topic,
                       "client_id": client_id or f"amtrace-test-{uuid.uuid4().hex[:12]}",
                       "max_payload_bytes": 4096, **conn},
        "signals": [sig("chamber_temp_c", "chamber.temp_c"), sig("chamber_pressure_kpa", "chamber.pressure_kpa"),
                    sig("phase", "cycle.phase", "str", f"{topic}/status")],
    })


def good(i: int, base_ms: int | None = None) -> bytes:
    """A valid telemetry payload; message i carries machine time base + i ms."""
    base_ms = base_ms if base_ms is not None else 1_700_000_000_000
    return json.dumps({"ts": base_ms + i, "seq": i, "values": {"chamber": {"temp_c": 100.0 + i * 0.01,
                                                                           "pressure_kpa": 101.3}}}).encode()


class Publisher:
    """A QoS 1 publisher standing in for the machines (auto-reconnecting, in-memory retry of unconfirmed)."""

    def __init__(self, port: int, protocol: str = "5"):
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"pub-{uuid.uuid4().hex[:10]}",
                                  protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos = []

    def publish(self, topic: str, payload: bytes):
        """Publish at QoS 1."""
        info = self.client.publish(topic, payload, qos=1)
        self.infos.append(info)
        return info

    def confirm(self, timeout: float = 30.0) -> None:
        """Wait until the broker confirmed every publish."""
        for info in self.infos:
            info.wait_for_publish(timeout)
            assert info.is_published()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
