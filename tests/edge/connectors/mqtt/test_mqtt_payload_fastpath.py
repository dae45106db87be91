"""The compiled fast path of MQTT payload parsing agrees with the general path, reading for reading,
and hands every message it cannot vouch for to the general path (which words the refusal)."""

from __future__ import annotations

import json
import random

import pytest

from edge.connectors.mqtt.payload import MalformedPayload, parse_fast, parse_general, parse_with_seq

from test_mqtt_payload import MACHINE, MALFORMED, NOW_MS, NOW_NS, STATUS, TELEMETRY


def both(raw: bytes, topic: str = TELEMETRY):
    """(fast result or None, general result or the general refusal's reason)."""
    fast = parse_fast(raw, machine=MACHINE, topic=topic, received_ns=NOW_NS)
    try:
        general = parse_general(raw, machine=MACHINE, topic=topic, received_ns=NOW_NS)
    except MalformedPayload as e:
        general = e.reason
    return fast, general


GOOD = [
    ("full snapshot, ms ts, seq", TELEMETRY, {"ts": NOW_MS - 1500, "seq": 7, "values": {
        "chamber": {"temp_c": 134.2, "pressure_kpa": 304}, "load": {"probe_1_c": -0.0}, "door": {"locked": True}}}),
    ("no ts, partial", TELEMETRY, {"values": {"chamber": {"temp_c": 20}}}),
    ("empty values", TELEMETRY, {"values": {}}),
    ("RFC 3339 ts with offset (colons in a string)", TELEMETRY,
     {"ts": "2026-09-21T16:13:19.123456789+02:00", "values": {"chamber": {"temp_c": 1e-300}}}),
    ("nulls are bad-quality readings", TELEMETRY, {"values": {"chamber": {"temp_c": None}, "door": {"locked": None}}}),
    ("int signal given 12.0, string with colons", STATUS,
     {"seq": 0, "values": {"cycle": {"number": 12.0, "phase": "hold: 134 C, 3:00 min"}}}),
    ("int at the 64-bit edges", STATUS, {"values": {"cycle": {"number": -(2**63)}}}),
    ("largest int", STATUS, {"values": {"cycle": {"number": 2**63 - 1, "phase": ""}}}),
    ("huge integer for a float signal", TELEMETRY, {"values": {"chamber": {"temp_c": 10**300}}}),
    ("keys in another order", TELEMETRY, {"values": {"door": {"locked": False}, "chamber": {"pressure_kpa": 1.5}},
                                          "seq": 3, "ts": NOW_MS}),
]


@pytest.mark.parametrize("case,topic,doc", GOOD, ids=[g[0] for g in GOOD])
def test_good_messages_take_the_fast_path_with_the_same_result(case, topic, doc):
    """A plainly good message is read by the fast path, into exactly what the general path reads."""
    fast, general = both(json.dumps(doc).encode(), topic)
    assert fast is not None
    assert fast == general
    assert [type(r.value) for r in fast[0].readings] == [type(r.value) for r in general[0].readings]


@pytest.mark.parametrize("case,raw,topic,reason", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_messages_are_left_to_the_general_path(case, raw, topic, reason):
    """The fast path accepts none of the malformed messages; parse_with_seq words each refusal."""
    assert parse_fast(raw, machine=MACHINE, topic=topic, received_ns=NOW_NS) is None
    with pytest.raises(MalformedPayload) as caught:
        parse_with_seq(raw, machine=MACHINE, topic=topic, received_ns=NOW_NS)
    assert caught.value.reason == reason


DUPLICATES = [
    (b'{"ts": 1790000000000, "ts": 1790000000001, "values": {}}', "key 'ts' appears twice in one object"),
    (b'{"values": {"chamber": {"temp_c": 1}}, "values": {"chamber": {"temp_c": 2}}}',
     "key 'values' appears twice in one object"),
    (b'{"values": {"chamber": {"temp_c": 1}, "chamber": {"pressure_kpa": 2}}}',
     "key 'chamber' appears twice in one object"),
    (b'{"values": {"door": {"locked": true, "locked": false}}}', "key 'locked' appears twice in one object"),
    # The repeated value holds colons itself: still one key fewer than the text has.
    (b'{"values": {"cycle": {"phase": "a:b:c", "phase": "d"}}}', "key 'phase' appears twice in one object"),
]


@pytest.mark.parametrize("raw,reason", DUPLICATES)
def test_duplicate_keys_are_caught_by_the_colon_count(raw, reason):
    """The fast parser keeps the last of two equal keys; the colon count sends such messages on."""
    topic = STATUS if b"phase" in raw else TELEMETRY
    fast, general = both(raw, topic)
    assert fast is None
    assert general == reason


def test_escaped_strings_go_the_general_way_and_are_read_the_same():
    """A backslash escape could hide a colon from the count, so the general path reads it."""
    raw = b'{"values": {"cycle": {"phase": "a\\u003ab \\"q\\""}}}'
    fast, general = both(raw, STATUS)
    assert fast is None
    ingest, seq = parse_with_seq(raw, machine=MACHINE, topic=STATUS, received_ns=NOW_NS)
    assert (ingest, seq) == general
    assert ingest.readings[0].value == 'a:b "q"'


def test_mutated_messages_never_make_the_paths_disagree():
    """3,000 byte-level mutations of good messages: whatever the fast path accepts, the general path
    accepts identically; whatever the general path refuses, the fast path refuses too."""
    rng = random.Random(20261126)
    alphabet = b'{}[]:,"\\ .-+0123456789eEtruefalsnNIy'
    seeds = [json.dumps(doc).encode() for _, topic, doc in GOOD if topic == TELEMETRY]
    fast_taken = refused = general_only = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[i] = rng.choice(alphabet)
            elif op < 0.7:
                del raw[i]
            else:
                raw.insert(i, rng.choice(alphabet))
        fast, general = both(bytes(raw))
        if isinstance(general, str):
            refused += 1
            assert fast is None, (bytes(raw), general)
        elif fast is not None:
            fast_taken += 1
            assert fast == general, bytes(raw)
        else:
            general_only += 1
    # Fixed seed, so fixed counts: both sides of the comparison were exercised many times.
    assert (refused, fast_taken, general_only) == (2836, 164, 0)
