"""MqttConnector against a real Mosquitto: acknowledge only what is stored, quarantine the malformed,
hold under back-pressure, survive a crash, a broker restart and an unreachable broker without loss."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_testkit import Publisher, SqliteSink, good, machine, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from edge.connectors.base import ConnectorError
from edge.connectors.mqtt.connector import MqttConnector

ROOT = Path(__file__).resolve().parents[4]
HERE = Path(__file__).resolve().parent


def topic() -> str:
    """A fresh topic per test, so tests sharing the session broker never see each other's messages."""
    return f"test/{uuid.uuid4().hex[:10]}/telemetry"


async def started(m, sink, **kw) -> MqttConnector:
    connector = MqttConnector(m, sink, agent_id="test", **kw)
    await connector.start()
    wait_until(lambda: connector.state.detail["subscribed"], what="connector subscribed")
    return connector


async def test_good_messages_are_stored_then_acked_in_one_submit_per_group(mosquitto, tmp_path, caplog):
    """Every good message becomes its readings; each message is acknowledged once, after it is stored."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port), sink)
    pub = Publisher(mosquitto.port)
    for i in range(200):
        pub.publish(t, good(i))
    pub.publish(f"{t}/status", b'{"values": {"cycle": {"phase": "plateau"}}}')
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 201, what="201 acks")
    stats = connector.stats
    assert (stats.messages_received, stats.messages_acked, stats.readings, stats.quarantined,
            stats.pending_unacked, stats.backpressure) == (201, 201, 401, 0, 0, False)
    assert sink.count("readings") == 401
    assert sink.rows("SELECT count(DISTINCT source_ts_ns) FROM readings WHERE signal='chamber_temp_c'") == [(200,)]
    assert sink.rows("SELECT value, origin FROM readings WHERE signal='phase'") == [('"plateau"', f"{t}/status")]
    assert sink.submits < 201  # grouped: several messages per durable transaction
    assert connector.state.connected and connector.state.last_error is None
    with caplog.at_level(logging.INFO):
        await connector.stop()
    # A clean stop says nothing alarming (paho used to log "Client is not connected" as an ERROR after it).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    pub.close()


BIG = b'{"values": {"chamber": {"temp_c": 1}}, "pad": "' + b"x" * 5000 + b'"}'
# (payload, exact quarantine reason)
MALFORMED = [
    (b"hello", "not JSON: Expecting value at line 1 column 1"),
    (b'{"values": {"chamber": {"temp_c": "hot"}}}', "values.chamber.temp_c: expected a number, got string 'hot'"),
    (b'{"values": {"chamber": {"temp_c": true}}}', "values.chamber.temp_c: expected a number, got boolean true"),
    (b'{"values": {"chamber": {"temp_c": NaN}}}', "values.chamber.temp_c: NaN is not a measurement"),
    (b'{"values": {"chamber": {"temp_c": Infinity}}}', "values.chamber.temp_c: Infinity is not a measurement"),
    (b'{"values": {"chamber": {"humidity": 40}}}',
     "unknown field values.chamber.humidity: not in the signal map of sterilizer-01"),
    (b'{"values": {}, "extra": 1}', "unknown field extra: only ts, seq and values are allowed at the top level"),
    (BIG, f"payload is {len(BIG)} bytes, limit 4096"),
    (b'{"ts": "2099-01-01T00:00:00Z", "values": {}}', None),  # reason depends on today: checked by prefix
    (b"", "not JSON: empty payload"),
]


async def test_malformed_messages_are_quarantined_and_acked_while_good_ones_flow(mosquitto, tmp_path):
    """Each malformed message is quarantined with raw bytes, topic and exact reason, and acknowledged."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    m = machine(t, mosquitto.port)
    connector = await started(m, sink)
    pub = Publisher(mosquitto.port)
    for i, (raw, _) in enumerate(MALFORMED):
        pub.publish(t, good(2 * i))
        pub.publish(t, raw)
        pub.publish(t, good(2 * i + 1))
    pub.confirm()
    total = 3 * len(MALFORMED)
    wait_until(lambda: connector.stats.messages_acked == total, what=f"{total} acks")
    stats = connector.stats
    assert (stats.messages_received, stats.quarantined, stats.readings, stats.pending_unacked) == (
        total, len(MALFORMED), 2 * 2 * len(MALFORMED), 0)
    rows = sink.rows("SELECT source, origin, raw, reason, machine FROM quarantine ORDER BY rowid")
    assert len(rows) == len(MALFORMED)
    for (raw, reason), row in zip(MALFORMED, rows):
        assert row[:3] == ("mqtt", t, raw)
        assert row[4] == "sterilizer-01"
        if reason is None:
            assert row[3].startswith("ts 2099-01-01T00:00:00Z is ") and row[3].endswith(" days in the future (limit 300 s)")
        else:
            assert row[3] == reason
    assert connector.state.connected  # the agent keeps running
    await connector.stop()

    # Acknowledged means gone from the broker: a new session with the same client id gets only new messages
    # (the broker sends a session's unacknowledged messages before newer ones, so the marker comes last).
    sink2 = SqliteSink(tmp_path / "sink2.sqlite")
    connector = await started(m, sink2)
    pub.publish(t, good(999))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 1, what="the marker message")
    assert connector.stats.messages_received == 1
    assert sink2.count("quarantine") == 0
    await connector.stop()
    pub.close()


async def test_messages_sent_while_the_agent_is_away_arrive_from_the_persistent_session(mosquitto, tmp_path):
    """Stopped connector, machine keeps publishing; the next start gets every message, exactly."""
    t = topic()
    m = machine(t, mosquitto.port)
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(m, sink)
    await connector.stop()
    pub = Publisher(mosquitto.port)
    for i in range(150):
        pub.publish(t, good(i))
    pub.confirm()
    connector = await started(m, sink)
    wait_until(lambda: connector.stats.messages_acked == 150, what="150 queued messages")
    assert sink.rows("SELECT count(*), count(DISTINCT source_ts_ns) FROM readings WHERE signal='chamber_temp_c'") \
        == [(150, 150)]
    assert connector.state.detail["session_present"] is True
    await connector.stop()
    pub.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_kill_9_before_ack_loses_nothing(mosquitto, tmp_path, protocol):
    """A connector killed (SIGKILL) after receiving but before storing: the broker redelivers every message."""
    t = topic()
    client_id = f"amtrace-crash-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "mqtt_blocking_child.py"), str(mosquitto.port), t, client_id, protocol,
         str(tmp_path / "child.sqlite")],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        line = ""
        while not line.startswith("subscribed"):
            line = child.stdout.readline()
            assert line, "child ended before it subscribed"
        pub = Publisher(mosquitto.port, protocol)
        for i in range(60):
            pub.publish(t, good(i))
        pub.confirm()
        while line.strip() != "subscribed received 60":
            line = child.stdout.readline()
            assert line, "child ended before receiving 60 messages"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    child_sink = SqliteSink(tmp_path / "child.sqlite")
    assert child_sink.count("readings") == 0  # it never stored (nor acknowledged) anything

    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port, protocol=protocol, client_id=client_id), sink)
    wait_until(lambda: connector.stats.messages_acked == 60, what="60 redelivered messages")
    assert sink.rows("SELECT count(*), count(DISTINCT source_ts_ns) FROM readings WHERE signal='chamber_temp_c'") \
        == [(60, 60)]
    assert connector.stats.messages_received == 60
    await connector.stop()
    pub.close()


async def test_sink_error_means_no_ack_and_redelivery_to_the_next_session(mosquitto, tmp_path):
    """When submit raises, nothing is acknowledged; after a restart of the agent the broker sends it all again."""
    t = topic()
    m = machine(t, mosquitto.port)
    sink = SqliteSink(tmp_path / "sink.sqlite")
    sink.fail = OSError(28, "No space left on device")
    connector = await started(m, sink)
    pub = Publisher(mosquitto.port)
    for i in range(40):
        pub.publish(t, good(i))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_received == 40 and connector.stats.backpressure, what="40 held")
    assert connector.stats.messages_acked == 0
    wait_until(lambda: "sink_error" in sink.event_kinds(), what="sink_error event")
    await connector.stop()  # the "agent" goes down with the sink still failing

    sink.fail = None
    connector = await started(m, sink)
    wait_until(lambda: connector.stats.messages_acked == 40, what="40 redelivered")
    assert sink.rows("SELECT count(*), count(DISTINCT source_ts_ns) FROM readings WHERE signal='chamber_temp_c'") \
        == [(40, 40)]
    await connector.stop()
    pub.close()


async def test_outbox_full_holds_acks_until_released(mosquitto, tmp_path):
    """OutboxFull: nothing acknowledged while full, one alarm event; after release all arrive, exactly once."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    sink.full.set()
    connector = await started(machine(t, mosquitto.port), sink)
    pub = Publisher(mosquitto.port)
    for i in range(300):
        pub.publish(t, good(i))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_received == 300, what="300 received")
    wait_until(lambda: "backpressure" in sink.event_kinds(), what="backpressure event")
    stats = connector.stats
    assert (stats.messages_acked, stats.pending_unacked, stats.backpressure) == (0, 300, True)
    assert sink.count("readings") == 0
    assert connector.state.connected

    sink.full.clear()
    wait_until(lambda: connector.stats.messages_acked == 300, what="300 acks after release")
    stats = connector.stats
    assert (stats.pending_unacked, stats.backpressure, stats.readings) == (0, False, 600)
    assert sink.rows("SELECT count(*), count(DISTINCT source_ts_ns) FROM readings WHERE signal='chamber_temp_c'") \
        == [(300, 300)]
    wait_until(lambda: "backpressure_released" in sink.event_kinds(), what="released event")
    kinds = sink.event_kinds()
    assert kinds.count("backpressure") == 1 and kinds.count("backpressure_released") == 1
    severity = sink.rows("SELECT severity FROM events WHERE kind='backpressure'")
    assert severity == [("alarm",)]
    await connector.stop()
    pub.close()


def let_mosquitto_reach(path: Path) -> None:
    """Make path's folders traversable for the 'mosquitto' user the broker drops to when started as root.

    Without this, pytest's private (0700) temp folders keep the broker from saving its persistence file
    ("unable to remove mosquitto.db.new: Permission denied") and a restart forgets every session."""
    if os.geteuid() != 0:
        return
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            os.chmod(folder, mode | 0o001)


@pytest.mark.slow
async def test_broker_restart_mid_stream_loses_nothing(mosquitto_factory, tmp_path):
    """Broker restarted while messages are held unacknowledged: the connector reconnects, the persistent
    session resumes, none is lost; a duplicate is only ever the identical reading (same machine ts)."""
    broker = mosquitto_factory()
    let_mosquitto_reach(broker.root / "data")
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    sink.full.set()  # hold everything unacknowledged, so the broker must keep it across its restart
    connector = await started(machine(t, broker.port), sink)
    pub = Publisher(broker.port)
    for i in range(1500):
        pub.publish(t, good(i))
    pub.confirm(60)
    # ReceiveMaximum bounds what the broker sends before acknowledgements: 1000 here, 500 wait at the broker.
    wait_until(lambda: connector.stats.messages_received == 1000, what="1000 in flight")
    assert connector.stats.messages_acked == 0
    broker.restart()
    wait_until(lambda: connector.state.detail["subscribed"] and connector.state.reconnects == 1, what="reconnect")
    assert connector.state.detail["session_present"] is True
    sink.full.clear()
    for i in range(1500, 2000):
        pub.publish(t, good(i))
    pub.confirm(60)
    wait_until(lambda: sink.rows("SELECT count(DISTINCT source_ts_ns) FROM readings")[0][0] == 2000,
               timeout=60, what="all 2000 machine timestamps")
    wait_until(lambda: connector.stats.pending_unacked == 0 and connector.stats.messages_acked >= 2000,
               what="everything acknowledged")
    # Duplicates only as identical readings: same signal, same machine ts, same value.
    assert sink.rows("SELECT count(*) FROM (SELECT signal, source_ts_ns FROM readings "
                     "GROUP BY signal, source_ts_ns HAVING count(DISTINCT value) > 1)") == [(0,)]
    assert sink.rows("SELECT count(DISTINCT signal || '@' || source_ts_ns) FROM readings") == [(4000,)]
    stats = connector.stats
    assert stats.messages_received == stats.messages_acked + stats.left_for_redelivery
    kinds = sink.event_kinds()
    assert kinds.count("connection_lost") == 1 and kinds.count("connection_restored") == 1
    assert "session_lost" not in kinds
    await connector.stop()
    pub.close()


async def test_unreachable_broker_is_reported_and_joined_when_it_appears(mosquitto_factory, tmp_path):
    """start() does not raise for a broker that is not there; it reports it, keeps trying and connects later."""
    import localstack

    port = localstack.free_port()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    t = topic()
    connector = MqttConnector(machine(t, port), sink)
    await connector.start()
    wait_until(lambda: connector.state.last_error is not None, what="an error")
    assert connector.state.connected is False
    assert connector.state.last_error == \
        f"broker 127.0.0.1:{port} is unreachable: connection refused (is the broker running?)"
    wait_until(lambda: "connection_lost" in sink.event_kinds(), what="connection_lost event")

    broker = mosquitto_factory(port=port)
    wait_until(lambda: connector.state.detail["subscribed"], what="connected once the broker is up")
    pub = Publisher(broker.port)
    pub.publish(t, good(1))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 1, what="a message")
    wait_until(lambda: "connection_restored" in sink.event_kinds(), what="restored")
    assert sink.event_kinds().count("connection_lost") == 1
    assert connector.state.last_error is None
    await connector.stop()
    pub.close()


async def test_refused_login_is_reported_in_plain_words(mosquitto_factory, tmp_path, monkeypatch):
    """A wrong password: the broker refuses; the state says so; the right one (from the env var) works."""
    import localstack

    class AuthMosquitto(localstack.Mosquitto):
        def command(self):
            cmd = super().command()
            passwd = self.root / "data" / "passwd"
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "s3cret"], check=True)
            if os.geteuid() == 0:  # the broker reads it after dropping to user 'mosquitto'
                shutil.chown(passwd, "mosquitto")
                let_mosquitto_reach(passwd.parent)
            conf = self.root / "mosquitto.conf"
            conf.write_text(conf.read_text().replace("allow_anonymous true", f"allow_anonymous false\n"
                                                     f"password_file {passwd}"))
            return cmd

    broker = AuthMosquitto(tmp_path / "broker").start()
    try:
        t = topic()
        monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
        m = machine(t, broker.port, username="edge", password_env="TEST_MQTT_PASSWORD")
        sink = SqliteSink(tmp_path / "sink.sqlite")
        connector = MqttConnector(m, sink)
        await connector.start()
        wait_until(lambda: connector.state.last_error is not None, what="refusal")
        assert connector.state.last_error == f"broker 127.0.0.1:{broker.port} refused the connection: not authorized"
        assert not connector.state.connected
        await connector.stop()

        monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3cret")
        connector = await started(m, sink)
        assert connector.state.connected and connector.state.last_error is None
        await connector.stop()

        monkeypatch.delenv("TEST_MQTT_PASSWORD")
        with pytest.raises(ConnectorError) as caught:
            await MqttConnector(m, sink).start()
        assert str(caught.value) == ("machine sterilizer-01: environment variable TEST_MQTT_PASSWORD "
                                     "(password of MQTT user edge) is not set")
    finally:
        broker.stop(kill=True)


async def test_start_enabled_command_is_published_and_confirmed(mosquitto, tmp_path):
    """set_start_enabled publishes the JSON command at QoS 1 and returns after the broker's PUBACK."""
    t = topic()
    command_topic = t.replace("telemetry", "command")
    got = []
    listener = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"l-{uuid.uuid4().hex[:8]}")
    listener.on_message = lambda c, u, msg: got.append(json.loads(msg.payload))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe(command_topic, qos=1)
    listener.loop_start()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port, command_topic=command_topic), sink)
    done = await connector.set_start_enabled(False, reason="release gate: design not approved")
    assert done == f"published start_enabled=false to {command_topic} on 127.0.0.1:{mosquitto.port} " \
                   "(QoS 1, retained, broker confirmed)"
    wait_until(lambda: len(got) == 2, what="the command at the machine")
    assert got[0]["reason"] == "(re)connection: no clearance yet (agent started)"  # the decision at connection
    assert {k: got[1][k] for k in ("command", "value", "reason", "machine_id")} == {
        "command": "start_enabled", "value": False, "reason": "release gate: design not approved",
        "machine_id": "sterilizer-01"}
    assert got[1]["ts"].endswith("Z")
    await connector.stop()
    listener.disconnect()
    listener.loop_stop()

    no_topic = MqttConnector(machine(t, mosquitto.port), sink)
    with pytest.raises(ConnectorError) as caught:
        await no_topic.set_start_enabled(True, reason="x")
    assert str(caught.value) == "machine sterilizer-01 has no MQTT command_topic: it offers no start interlock"


def _retained(port: int, command_topic: str) -> dict:
    """What a machine that (re)starts and subscribes gets from the broker on its command topic."""
    got = []
    machine_client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                 client_id=f"m-{uuid.uuid4().hex[:8]}")
    machine_client.on_message = lambda c, u, msg: got.append((msg.retain, json.loads(msg.payload)))
    machine_client.connect("127.0.0.1", port)
    machine_client.subscribe(command_topic, qos=1)
    machine_client.loop_start()
    try:
        wait_until(lambda: got, what="the retained command")
    finally:
        machine_client.disconnect()
        machine_client.loop_stop()
    assert got[0][0] is True, "delivered as the retained message"
    return got[0][1]


async def test_a_restarting_machine_gets_the_current_decision_and_a_vanished_agent_blocks_the_start(
        mosquitto, tmp_path):
    """Commands are retained, so a machine that restarts learns the agent's current decision; the agent's Last
    Will sets start_enabled=false if the agent vanishes; on reconnection the agent publishes its decision again.
    Before, a command went out once, unretained: a machine restarting later never heard it."""
    t = topic()
    command_topic = t.replace("telemetry", "command")
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port, command_topic=command_topic), sink)
    try:
        await connector.set_start_enabled(True, reason="release gate passed")
        await connector.set_start_enabled(False, reason="requalification required")
        assert {k: v for k, v in _retained(mosquitto.port, command_topic).items() if k in ("value", "reason")} == {
            "value": False, "reason": "requalification required"}
        await connector.set_start_enabled(True, reason="requalified")
        assert _retained(mosquitto.port, command_topic)["value"] is True
        reconnects = connector.state.reconnects
        connector._client.socket().close()  # the agent's connection dies without a DISCONNECT (crash, cable)
        wait_until(lambda: connector.state.reconnects > reconnects, what="the agent's reconnection")
        wait_until(lambda: _retained(mosquitto.port, command_topic)["reason"] == "(re)connection: requalified",
                   what="the decision published again after reconnecting")
    finally:
        await connector.stop()


async def test_the_last_will_blocks_the_start_when_the_agent_vanishes(mosquitto, tmp_path):
    t = topic()
    command_topic = t.replace("telemetry", "command")
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port, command_topic=command_topic), sink)
    await connector.set_start_enabled(True, reason="release gate passed")
    connector._stopping.set()  # no reconnection: the agent is gone
    connector._client.socket().close()
    wait_until(lambda: _retained(mosquitto.port, command_topic)["value"] is False, what="the Last Will")
    will = _retained(mosquitto.port, command_topic)
    assert will["reason"] == f"agent connection to 127.0.0.1:{mosquitto.port} lost"
    await connector.stop()


async def test_seq_jump_is_recorded_as_a_gap_event(mosquitto, tmp_path):
    """A machine's seq that jumps (messages it sent that never arrived) becomes a 'gap' event with the count."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port), sink)
    pub = Publisher(mosquitto.port)
    for i in (1, 2, 3, 7, 8):
        pub.publish(t, good(i))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 5, what="5 acks")
    [(message, fields)] = sink.rows("SELECT message, fields FROM events WHERE kind='gap'")
    assert message.startswith(f"3 message(s) missing on {t}, seq 4–6, ") and message.endswith(": never reached the agent")
    fields = json.loads(fields)
    assert (fields["missing"], fields["from_seq"], fields["to_seq"], fields["recovery"]) == (3, 4, 6, "none")
    assert fields["start_ns"] <= fields["end_ns"], "the span: from the last message before the hole to the first after"
    assert connector.stats.seq_gaps == 1
    await connector.stop()
    pub.close()


def _seq_message(i: int, seq: int) -> bytes:
    """Message i (its own machine time) with the given seq."""
    return json.dumps({"ts": 1_700_000_000_000 + i, "seq": seq,
                       "values": {"chamber": {"temp_c": 100.0, "pressure_kpa": 101.3}}}).encode()


async def test_a_machine_restart_a_redelivery_and_a_count_that_goes_back_are_told_apart_and_none_is_a_gap(
        mosquitto, tmp_path):
    """Issue 18: a seq back near 0 after more than the window is a machine restart; a little below the last, a
    redelivery; far back to a high value, `seq_backward`. None of them turns into a (huge) false gap."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port), sink)
    pub = Publisher(mosquitto.port)
    seqs = [*range(0, 1500), 1490, 1500, 0, 1, 2, 900_000, 5000, 5001]
    for i, seq in enumerate(seqs):
        pub.publish(t, _seq_message(i, seq))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == len(seqs), what="every message acked")
    kinds = sink.rows("SELECT kind, message FROM events WHERE kind IN ('gap', 'machine_restart', 'seq_backward')")
    assert [k for k, _ in kinds] == ["machine_restart", "gap", "seq_backward"], kinds
    assert kinds[0][1] == f"seq on {t} started again at 0 after 1500: the machine restarted its count (not a gap)"
    assert "seq 3–899999" in kinds[1][1], "a real jump forward is a gap with its range"
    assert "went back from 900000 to 5000" in kinds[2][1]
    await connector.stop()
    pub.close()


async def test_the_last_seq_is_kept_with_the_data_so_a_new_connector_sees_the_hole_since_the_last_one(
        mosquitto, tmp_path):
    """The last seq per topic is stored in the same transaction as the readings; the connector of a restarted
    agent starts from it (here the sink outlives the connector, as the outbox outlives the agent)."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    client_id = f"amtrace-test-{uuid.uuid4().hex[:12]}"  # one agent: the same client id before and after
    first = await started(machine(t, mosquitto.port, client_id=client_id), sink)
    pub = Publisher(mosquitto.port)
    for i in range(10):
        pub.publish(t, _seq_message(i, i))
    pub.confirm()
    wait_until(lambda: first.stats.messages_acked == 10, what="10 acks")
    await first.stop()
    assert json.loads(sink.saved_state(f"mqtt:{first.machine.id}:seq:{t}")[f"mqtt:{first.machine.id}:seq:{t}"])[0] == 9
    second = await started(machine(t, mosquitto.port, client_id=client_id), sink)
    pub.publish(t, _seq_message(20, 20))
    pub.confirm()
    wait_until(lambda: second.stats.messages_acked == 1, what="1 ack")
    [(message,)] = sink.rows("SELECT message FROM events WHERE kind='gap'")
    assert f"10 message(s) missing on {t}, seq 10–19" in message
    assert message.endswith("published while the agent was not running and not kept by the broker")
    await second.stop()
    pub.close()


async def test_poison_messages_are_quarantined_and_the_machines_intake_goes_on(mosquitto, tmp_path):
    """Issue 16: an integer of more than 4,300 digits (Python refuses to read it) used to kill the machine's
    flush thread, and a line break in a text value was accepted and then refused by the database for ever, so
    nothing after either was acknowledged. Both are quarantined with a reason; the messages after them flow."""
    t = topic()
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port, max_payload_bytes=65536), sink)
    pub = Publisher(mosquitto.port)
    pub.publish(t, good(1))
    pub.publish(t, b'{"ts": 1700000000002, "seq": ' + b"9" * 5000 + b', "values": {"chamber": {"temp_c": 1.0}}}')
    pub.publish(f"{t}/status", json.dumps({"ts": 1_700_000_000_003, "values": {"cycle": {"phase": "hold\nEVIL"}}}
                                          ).encode())
    pub.publish(t, good(4))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 4, what="every message acknowledged")
    reasons = [r for (r,) in sink.rows("SELECT reason FROM quarantine ORDER BY rowid")]
    assert reasons == ["not JSON this agent reads: Exceeds the limit (4300 digits) for integer string conversion: "
                       "value has 5000 digits",
                       "values.cycle.phase: string holds a line break, which the time-series database cannot store"]
    assert sink.count("readings") == 4, "the good messages before and after are stored"
    assert connector.state.intake_problem is None
    await connector.stop()
    pub.close()


async def test_a_message_the_pipeline_keeps_refusing_is_isolated_and_quarantined(mosquitto, tmp_path):
    """The safety net: a batch that the sink refuses again and again for something other than the disk or the
    budget is stored message by message, and only the message refused is quarantined (a fault no real message
    produces after the parser's checks, so the sink refuses one value on purpose here)."""
    t = topic()

    class Refusing(SqliteSink):
        def submit(self, ingests, *, state=None):
            if any(r.value == 100.02 for i in ingests for r in i.readings):
                raise ValueError("line protocol refused the value 100.02")
            super().submit(ingests, state=state)

    sink = Refusing(tmp_path / "sink.sqlite")
    connector = await started(machine(t, mosquitto.port), sink)
    pub = Publisher(mosquitto.port)
    for i in range(1, 5):
        pub.publish(t, good(i))
    pub.confirm()
    wait_until(lambda: connector.stats.messages_acked == 4, what="every message acknowledged", timeout=20)
    assert [r for (r,) in sink.rows("SELECT reason FROM quarantine")] == [
        "refused by the agent's pipeline (ValueError: line protocol refused the value 100.02)"]
    assert sink.count("readings") == 3 * 2
    assert [k for (k,) in sink.rows("SELECT kind FROM events WHERE kind='poison_message'")] == ["poison_message"]
    await connector.stop()
    pub.close()
