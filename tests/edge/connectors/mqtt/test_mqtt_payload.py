"""parse_payload: good messages become exact readings; every kind of bad message is refused with its exact reason."""

from __future__ import annotations

import json

import pytest

from edge.config import ConfigError, MachineConfig
from edge.connectors.mqtt.payload import MalformedPayload, parse_payload, parse_with_seq, signal_map
from edge.readings import Reading

TELEMETRY = "plant/sterilizer-01/telemetry"
STATUS = "plant/sterilizer-01/status"
NOW_NS = 1_790_000_000_000_000_000  # 2026-09-21T14:13:20Z, the "received" time of every message here
NOW_MS = NOW_NS // 1_000_000


def _sig(name, path, type_="float", topic=None, **kw):
    source = {"path": path} if topic is None else {"path": path, "topic": topic}
    return {"name": name, "source": source, "measurement": "sterilization", "field": name, "unit": "1",
            "type": type_, **kw}


def make_machine(**conn) -> MachineConfig:
    """A steam sterilizer with a telemetry topic and a separate status topic."""
    return MachineConfig.model_validate({
        "id": "sterilizer-01", "kind": "steam_sterilizer", "manufacturer": "Test", "model": "T", "serial": "1",
        "connection": {"type": "mqtt", "topic": TELEMETRY, "max_payload_bytes": 4096, **conn},
        "signals": [
            _sig("chamber_temp_c", "chamber.temp_c", limits={"alarm_high": 138}),
            _sig("chamber_pressure_kpa", "chamber.pressure_kpa"),
            _sig("load_temp_1_c", "load.probe_1_c"),
            _sig("cycle_number", "cycle.number", "int", topic=STATUS),
            _sig("phase", "cycle.phase", "str", topic=STATUS),
            _sig("door_locked", "door.locked", "bool"),
        ],
    })


MACHINE = make_machine()


def parse(doc, topic=TELEMETRY, machine=MACHINE):
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_payload(raw, machine=machine, topic=topic, received_ns=NOW_NS)


def test_full_snapshot_becomes_readings_with_machine_time():
    """Every leaf becomes a reading of its signal, stamped with the message's ts (Unix ms)."""
    ingest = parse({"ts": NOW_MS - 1500, "seq": 7, "values": {
        "chamber": {"temp_c": 134.2, "pressure_kpa": 304}, "load": {"probe_1_c": 133.9}, "door": {"locked": True}}})
    ts = (NOW_MS - 1500) * 1_000_000
    assert ingest.machine_id == "sterilizer-01"
    assert ingest.origin == TELEMETRY
    assert ingest.received_ns == NOW_NS
    assert list(ingest.readings) == [
        Reading("chamber_temp_c", 134.2, ts), Reading("chamber_pressure_kpa", 304.0, ts),
        Reading("load_temp_1_c", 133.9, ts), Reading("door_locked", True, ts),
    ]
    assert type(ingest.readings[1].value) is float  # an int is accepted for a float signal, stored as float


def test_partial_snapshot_and_no_ts():
    """A missing signal is fine; without ts the readings carry None (the pipeline uses received_ns)."""
    ingest = parse({"values": {"chamber": {"temp_c": 20}}})
    assert list(ingest.readings) == [Reading("chamber_temp_c", 20.0, None)]
    assert list(parse({"values": {}}).readings) == []


def test_rfc3339_ts_keeps_nanoseconds_and_offset():
    """An RFC 3339 ts with offset and a 9-digit fraction is exact to the nanosecond."""
    ingest = parse({"ts": "2026-09-21T16:13:19.123456789+02:00", "values": {"chamber": {"temp_c": 1}}})
    assert ingest.readings[0].source_ts_ns == NOW_NS - 10**9 + 123_456_789
    ingest = parse({"ts": "2026-09-21T14:13:20Z", "values": {"chamber": {"temp_c": 1}}})
    assert ingest.readings[0].source_ts_ns == NOW_NS


def test_signals_on_their_own_topic():
    """A message on the status topic carries the status signals, and only those."""
    ingest, seq = parse_with_seq(json.dumps({"seq": 12, "values": {"cycle": {"phase": "plateau", "number": 12.0}}})
                                 .encode(), machine=MACHINE, topic=STATUS, received_ns=NOW_NS)
    assert seq == 12
    assert list(ingest.readings) == [Reading("phase", "plateau", None), Reading("cycle_number", 12, None)]
    with pytest.raises(MalformedPayload) as caught:
        parse({"values": {"chamber": {"temp_c": 1}}}, topic=STATUS)
    assert caught.value.reason == "unknown field values.chamber: not in the signal map of sterilizer-01"


def test_null_is_a_bad_quality_reading():
    """null = the machine has no value for the signal: kept as a visible bad-quality reading."""
    ingest = parse({"values": {"chamber": {"temp_c": None}}})
    assert list(ingest.readings) == [Reading("chamber_temp_c", None, None, quality="bad", status="null in payload")]


def test_wildcard_topic_matches():
    """A connection topic with '+' reads every matching topic with the same signal map."""
    machine = make_machine(topic="plant/+/telemetry")
    ingest = parse({"values": {"door": {"locked": False}}}, topic="plant/sterilizer-01/telemetry", machine=machine)
    assert list(ingest.readings) == [Reading("door_locked", False, None)]
    assert signal_map(machine).subscriptions == ["plant/+/telemetry", STATUS]


def test_overlapping_subscriptions_are_collapsed():
    """A signal topic covered by the connection's wildcard is not subscribed twice (no double delivery)."""
    machine = make_machine(topic="plant/sterilizer-01/#")
    assert signal_map(machine).subscriptions == ["plant/sterilizer-01/#"]
    ingest = parse({"values": {"cycle": {"phase": "end"}, "chamber": {"temp_c": 30}}}, topic=STATUS, machine=machine)
    assert [r.signal for r in ingest.readings] == ["phase", "chamber_temp_c"]


def test_ambiguous_signal_map_is_refused():
    """Two signals on one path, or a path that is both a value and an object, are refused up front."""
    data = make_machine().model_dump(mode="json", exclude_none=True)
    data["signals"][1]["source"]["path"] = "chamber.temp_c"
    with pytest.raises(ConfigError) as caught:
        signal_map(MachineConfig.model_validate(data))
    assert str(caught.value) == (
        "machine sterilizer-01: signal 'chamber_pressure_kpa' and chamber_temp_c both read values.chamber.temp_c "
        f"on topic {TELEMETRY}")
    data["signals"][1]["source"]["path"] = "chamber.temp_c.raw"
    with pytest.raises(ConfigError) as caught:
        signal_map(MachineConfig.model_validate(data))
    assert "reads values.chamber.temp_c as a value, but signal 'chamber_pressure_kpa' needs it to be an object" \
        in str(caught.value)


BIG = b'{"values": {"chamber": {"temp_c": 1}}, "pad": "' + b"x" * 5000 + b'"}'

# (case, raw payload, topic, exact reason)
MALFORMED = [
    ("not JSON", b"hello", TELEMETRY, "not JSON: Expecting value at line 1 column 1"),
    ("truncated JSON", b'{"values": {"chamber": ', TELEMETRY, "not JSON: Expecting value at line 1 column 24"),
    ("empty payload", b"", TELEMETRY, "not JSON: empty payload"),
    ("not UTF-8", b'{"values": {"\xff": 1}}', TELEMETRY, "not UTF-8: byte 0xff at offset 13"),
    ("oversized (checked before parsing)", BIG, TELEMETRY, f"payload is {len(BIG)} bytes, limit 4096"),
    ("top level is an array", b"[1, 2]", TELEMETRY, "top level: expected a JSON object, got array"),
    ("string for a number", b'{"values": {"chamber": {"temp_c": "hot"}}}', TELEMETRY,
     "values.chamber.temp_c: expected a number, got string 'hot'"),
    ("bool is not a number", b'{"values": {"chamber": {"temp_c": true}}}', TELEMETRY,
     "values.chamber.temp_c: expected a number, got boolean true"),
    ("NaN", b'{"values": {"chamber": {"temp_c": NaN}}}', TELEMETRY, "values.chamber.temp_c: NaN is not a measurement"),
    ("Infinity", b'{"values": {"load": {"probe_1_c": -Infinity}}}', TELEMETRY,
     "values.load.probe_1_c: -Infinity is not a measurement"),
    ("overflow to infinity", b'{"values": {"chamber": {"pressure_kpa": 1e999}}}', TELEMETRY,
     "values.chamber.pressure_kpa: 1e999 is not a measurement"),
    ("fraction for an int", b'{"values": {"cycle": {"number": 12.5}}}', STATUS,
     "values.cycle.number: expected an integer, got number 12.5"),
    ("int beyond 64 bits", b'{"values": {"cycle": {"number": 9223372036854775808}}}', STATUS,
     "values.cycle.number: integer of 19 digits does not fit in 64 bits"),
    ("number for a bool", b'{"values": {"door": {"locked": 1}}}', TELEMETRY,
     "values.door.locked: expected true or false, got integer 1"),
    ("number for a string", b'{"values": {"cycle": {"phase": 3}}}', STATUS,
     "values.cycle.phase: expected a string, got integer 3"),
    ("lone surrogate", b'{"values": {"cycle": {"phase": "\\ud800"}}}', STATUS,
     "values.cycle.phase: string holds an unpaired surrogate \\ud800"),
    ("object for a value", b'{"values": {"chamber": {"temp_c": {"v": 1}}}}', TELEMETRY,
     "values.chamber.temp_c: expected a number, got object"),
    ("value for an object", b'{"values": {"chamber": 134}}', TELEMETRY,
     "values.chamber: expected an object, got integer 134"),
    ("unknown leaf", b'{"values": {"chamber": {"humidity": 40}}}', TELEMETRY,
     "unknown field values.chamber.humidity: not in the signal map of sterilizer-01"),
    ("unknown top-level field", b'{"values": {}, "temp": 1}', TELEMETRY,
     "unknown field temp: only ts, seq and values are allowed at the top level"),
    ("no values", b'{"ts": 1790000000000}', TELEMETRY,
     "values: missing (a message carries its signals in a 'values' object)"),
    ("values is a list", b'{"values": [1]}', TELEMETRY, "values: expected an object, got array"),
    ("duplicate key", b'{"values": {"chamber": {"temp_c": 1, "temp_c": 2}}}', TELEMETRY,
     "key 'temp_c' appears twice in one object"),
    ("ts far in the future", b'{"ts": "2027-01-01T00:00:00Z", "values": {}}', TELEMETRY,
     "ts 2027-01-01T00:00:00Z is 101 days in the future (limit 300 s)"),
    ("ts a little too far ahead", b'{"ts": 1790000400000, "values": {}}', TELEMETRY,
     "ts 2026-09-21T14:20:00Z is 6 min in the future (limit 300 s)"),
    ("ts in seconds, not ms", b'{"ts": 1790000000, "values": {}}', TELEMETRY,
     "ts 1970-01-21T17:13:20Z is before 2000-01-01: not a plausible machine time (seconds sent as milliseconds?)"),
    ("ts without offset", b'{"ts": "2026-09-21T14:13:20", "values": {}}', TELEMETRY,
     "ts string '2026-09-21T14:13:20': not RFC 3339 (e.g. 2026-03-01T12:00:00.250Z or +01:00 offset)"),
    ("ts impossible date", b'{"ts": "2026-02-30T00:00:00Z", "values": {}}', TELEMETRY,
     "ts '2026-02-30T00:00:00Z': not a valid date and time (day is out of range for month)"),
    ("ts as float", b'{"ts": 1790000000000.5, "values": {}}', TELEMETRY,
     "ts: expected Unix milliseconds (integer) or an RFC 3339 string with offset, got number 1790000000000.5"),
    ("ts as bool", b'{"ts": true, "values": {}}', TELEMETRY,
     "ts: expected Unix milliseconds (integer) or an RFC 3339 string with offset, got boolean true"),
    ("ts out of range", b'{"ts": -5, "values": {}}', TELEMETRY, "ts -5: not a Unix time in milliseconds"),
    ("seq not an integer", b'{"seq": "5", "values": {}}', TELEMETRY,
     "seq: expected a non-negative integer, got string '5'"),
    ("nested too deeply", b"[" * 2000 + b"]" * 2000, TELEMETRY, "not JSON this agent reads: nested too deeply"),
    ("topic without signals", b'{"values": {}}', "plant/other", "topic plant/other carries no signal of sterilizer-01"),
]


@pytest.mark.parametrize("case,raw,topic,reason", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_payload_is_refused_with_exact_reason(case, raw, topic, reason):
    """Each malformed payload raises MalformedPayload whose reason names what and where."""
    with pytest.raises(MalformedPayload) as caught:
        parse(raw, topic=topic)
    assert caught.value.reason == reason
    assert str(caught.value) == reason


def test_size_is_checked_before_parsing():
    """An oversized payload is refused even when it is not JSON at all (it was never parsed)."""
    with pytest.raises(MalformedPayload) as caught:
        parse(b"\xff" * 5000)
    assert caught.value.reason == "payload is 5000 bytes, limit 4096"
