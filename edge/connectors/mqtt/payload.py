"""Turn one MQTT message into an Ingest, or refuse it with a reason a person can act on.

Payload format (edge/connectors/mqtt/README.md has a full example):
    {"ts": <Unix ms integer | RFC 3339 string with offset>, "seq": <optional int>,
     "values": {<nested objects; each leaf is the value of the signal whose source.path points there>}}
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from paho.mqtt.client import topic_matches_sub

from edge.config import ConfigError, MachineConfig, SignalConfig
from edge.readings import Ingest, Reading
from edge.values import INT64, coerce, describe

_TOP_LEVEL = ("ts", "seq", "values")
_TS_MIN_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z: earlier is no machine clock we trust
_TS_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the end of RFC 3339
_INT64 = INT64  # the bound of edge.values, used by the fast path below too
_FLOAT_MAX_INT = 2**1023  # below float max: float() of an integer this size never overflows
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_TOPIC_CACHE_LIMIT = 1024


class MalformedPayload(ValueError):
    """A message that cannot be read as readings; `reason` says what and where."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _NonFinite:
    """A NaN/Infinity literal, kept as a marker so the error can name the field it sits in."""

    literal: str


def _refuse_constant(literal: str) -> _NonFinite:
    return _NonFinite(literal)


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    # 1e999 is legal JSON but becomes inf in Python: no measurement either.
    return value if math.isfinite(value) else _NonFinite(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                # Which value would win is a JSON library accident; refuse instead of guessing.
                raise MalformedPayload(f"key {key!r} appears twice in one object")
            seen.add(key)
    return obj


def effective_topic(machine: MachineConfig, signal: SignalConfig) -> str:
    """The topic (filter) a signal arrives on: its own source.topic, else the connection topic."""
    return signal.source.topic or machine.connection.topic


class SignalMap:
    """A machine's MQTT signal map: which signals a message on a given topic carries, by path."""

    def __init__(self, machine: MachineConfig):
        if machine.connection.type != "mqtt":
            raise ConfigError(f"machine {machine.id}: connection type is {machine.connection.type}, not mqtt")
        self.machine = machine
        by_filter: dict[str, list[SignalConfig]] = {}
        for s in machine.signals:
            by_filter.setdefault(effective_topic(machine, s), []).append(s)
        self.by_filter = by_filter
        for filt, signals in by_filter.items():
            self._tree(signals, filt)  # refuse ambiguous maps at start, not at the first message
        self._cache: dict[str, dict] = {}
        self._plans: dict[str, dict | None] = {}

    @property
    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to; a filter covered by another (wildcard) one is left out,
        so a broker never sends the same message twice for overlapping subscriptions."""
        filters = list(self.by_filter)
        keep = []
        for f in filters:
            covered = any(
                g != f and "+" not in f and "#" not in f and topic_matches_sub(g, f) for g in filters
            )
            if not covered:
                keep.append(f)
        return keep

    def tree_for(self, topic: str) -> dict:
        """Nested dict path element -> SignalConfig (leaf) or dict, for the signals a topic carries."""
        tree = self._cache.get(topic)
        if tree is None:
            signals = [
                s for filt, sigs in self.by_filter.items() if topic_matches_sub(filt, topic) for s in sigs
            ]
            tree = self._tree(signals, topic)
            if len(self._cache) >= _TOPIC_CACHE_LIMIT:
                self._cache.clear()  # wildcard topics could otherwise grow this without bound
            self._cache[topic] = tree
        return tree

    def plan_for(self, topic: str) -> dict | None:
        """The compiled parse plan of a topic for the fast path: path element -> (signal name, type)
        or a nested plan; None when the fast path cannot vouch for this topic (a key with a colon)."""
        if topic in self._plans:
            return self._plans[topic]
        plan = _compile(self.tree_for(topic))
        if len(self._plans) >= _TOPIC_CACHE_LIMIT:
            self._plans.clear()
        self._plans[topic] = plan
        return plan

    def _tree(self, signals: list[SignalConfig], topic: str) -> dict:
        tree: dict = {}
        for s in signals:
            parts = s.source.path.split(".")
            node = tree
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                here = node.get(part)
                if last:
                    if here is not None:
                        other = here.name if isinstance(here, SignalConfig) else "other signals below it"
                        raise ConfigError(
                            f"machine {self.machine.id}: signal '{s.name}' and {other!s} both read "
                            f"values.{s.source.path} on topic {topic}"
                        )
                    node[part] = s
                else:
                    if isinstance(here, SignalConfig):
                        raise ConfigError(
                            f"machine {self.machine.id}: signal '{here.name}' reads values."
                            f"{'.'.join(parts[: i + 1])} as a value, but signal '{s.name}' needs it to be an "
                            f"object (path {s.source.path}) on topic {topic}"
                        )
                    node = node.setdefault(part, {})
        return tree


def _compile(tree: dict) -> dict | None:
    # The fast path's duplicate-key check counts colons: a key holding one would upset the count.
    plan: dict = {}
    for key, node in tree.items():
        if ":" in key:
            return None
        if isinstance(node, dict):
            sub = _compile(node)
            if sub is None:
                return None
            plan[key] = sub
        else:
            plan[key] = (node.name, node.type)
    return plan


def signal_map(machine: MachineConfig) -> SignalMap:
    """The (cached) SignalMap of an MQTT machine; raises ConfigError for an ambiguous map."""
    cached = machine.__dict__.get("_mqtt_signal_map")
    if cached is None:
        cached = SignalMap(machine)
        machine.__dict__["_mqtt_signal_map"] = cached
    return cached


def _describe(value: Any) -> str:
    return value.literal if isinstance(value, _NonFinite) else describe(value)


def _format_ts(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def _human_span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    if seconds >= 120:
        return f"{int(seconds // 60)} min"
    return f"{seconds:.0f} s"


def _parse_ts(value: Any, max_future_skew_s: float, received_ns: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _TS_MAX_MS:
            raise MalformedPayload(f"ts {value}: not a Unix time in milliseconds")
        ns = value * 1_000_000
        shown = _format_ts(ns)
    elif isinstance(value, str):
        m = _RFC3339.match(value)
        if not m:
            raise MalformedPayload(
                f"ts {_describe(value)}: not RFC 3339 (e.g. 2026-03-01T12:00:00.250Z or +01:00 offset)"
            )
        day, clock, frac, offset = m.groups()
        try:
            whole = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if offset in 'Zz' else offset}")
        except ValueError as e:
            raise MalformedPayload(f"ts {value!r}: not a valid date and time ({e})") from None
        # Fractions are added as integer nanoseconds: datetime stops at microseconds.
        ns = int(whole.timestamp()) * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)
        shown = value
    elif isinstance(value, _NonFinite):
        raise MalformedPayload(f"ts: {value.literal} is not a time")
    else:
        raise MalformedPayload(
            f"ts: expected Unix milliseconds (integer) or an RFC 3339 string with offset, got {_describe(value)}"
        )
    if ns < _TS_MIN_NS:
        raise MalformedPayload(
            f"ts {shown} is before 2000-01-01: not a plausible machine time (seconds sent as milliseconds?)"
        )
    ahead_ns = ns - received_ns
    if ahead_ns > max_future_skew_s * 1e9:
        raise MalformedPayload(
            f"ts {shown} is {_human_span(ahead_ns / 1e9)} in the future (limit {max_future_skew_s:g} s)"
        )
    return ns


def _reading(signal: SignalConfig, value: Any, path: str, ts_ns: int | None) -> Reading:
    if isinstance(value, _NonFinite):
        # NaN has no meaning as a measurement; Infinity is what a broken converter sends.
        raise MalformedPayload(f"{path}: {value.literal} is not a measurement")
    if value is None:
        # null = the machine says it has no value (sensor failure); a visible bad-quality point.
        return Reading(signal.name, None, ts_ns, quality="bad", status="null in payload")
    try:
        return Reading(signal.name, coerce(signal.type, value), ts_ns)
    except ValueError as e:
        raise MalformedPayload(f"{path}: {e}") from None


def _walk(obj: dict, tree: dict, prefix: str, machine_id: str, ts_ns: int | None, out: list[Reading]) -> None:
    for key, value in obj.items():
        path = f"{prefix}.{key}"
        node = tree.get(key)
        if node is None:
            raise MalformedPayload(f"unknown field {path}: not in the signal map of {machine_id}")
        if isinstance(node, dict):
            if not isinstance(value, dict):
                raise MalformedPayload(f"{path}: expected an object, got {_describe(value)}")
            _walk(value, node, path, machine_id, ts_ns, out)
        else:
            out.append(_reading(node, value, path, ts_ns))


def parse_payload(raw: bytes, *, machine: MachineConfig, topic: str, received_ns: int) -> Ingest:
    """Read one MQTT message of `machine` received on `topic`; raise MalformedPayload with the reason."""
    return parse_with_seq(raw, machine=machine, topic=topic, received_ns=received_ns)[0]


def parse_with_seq(
    raw: bytes, *, machine: MachineConfig, topic: str, received_ns: int
) -> tuple[Ingest, int | None]:
    """parse_payload() that also returns the message's seq (None when absent), for gap detection."""
    parsed = parse_fast(raw, machine=machine, topic=topic, received_ns=received_ns)
    if parsed is not None:
        return parsed
    return parse_general(raw, machine=machine, topic=topic, received_ns=received_ns)


class _NotFast(Exception):
    """The fast path cannot vouch for this message; the general path decides (and words the reason)."""


# No parse_float and no object_pairs_hook: the C scanner builds floats and dicts itself. Non-finite
# floats are caught by the leaf checks, duplicate keys by the colon count in parse_fast.
_FAST_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_fast(
    raw: bytes, *, machine: MachineConfig, topic: str, received_ns: int
) -> tuple[Ingest, int | None] | None:
    """The common case in one pass over a compiled plan: the same result as parse_general, or None
    when the message is not plainly good (the general path then accepts it or words the refusal)."""
    conn = machine.connection
    if not raw or len(raw) > conn.max_payload_bytes:
        return None
    try:
        text = raw.decode("utf-8") if type(raw) is bytes else bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Without backslashes every string in the text is literal, which the colon count relies on
    # (and no lone surrogate can appear).
    if "\\" in text:
        return None
    try:
        doc = _FAST_DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    plan = signal_map(machine).plan_for(topic)
    if not plan:
        return None
    values = doc.get("values")
    if type(values) is not dict:
        return None
    keys = len(doc)
    colons_in_strings = 0
    ts_ns = None
    seq = None
    for key, value in doc.items():
        if key == "values":
            continue
        if key == "ts":
            if type(value) is int:
                if not 0 <= value <= _TS_MAX_MS:
                    return None
                ts_ns = value * 1_000_000
                if ts_ns < _TS_MIN_NS or ts_ns - received_ns > conn.max_future_skew_s * 1e9:
                    return None
            elif type(value) is str:
                try:
                    ts_ns = _parse_ts(value, conn.max_future_skew_s, received_ns)
                except MalformedPayload:
                    return None
                colons_in_strings += value.count(":")
            else:
                return None
        elif key == "seq":
            if type(value) is not int or not 0 <= value < _INT64:
                return None
            seq = value
        else:
            return None
    readings: list[Reading] = []
    try:
        keys, colons_in_strings = _walk_fast(values, plan, ts_ns, readings, keys, colons_in_strings)
    except _NotFast:
        return None
    # Each key in the text is followed by one colon; other colons sit inside strings. A key given
    # twice leaves one fewer key (and maybe fewer string colons) in the parsed document than the
    # text has colons, so equality proves no key was repeated.
    if text.count(":") != keys + colons_in_strings:
        return None
    return Ingest(machine_id=machine.id, readings=tuple(readings), received_ns=received_ns, origin=topic), seq


def _walk_fast(obj: dict, plan: dict, ts_ns: int | None, out: list[Reading], keys: int,
               colons: int) -> tuple[int, int]:
    keys += len(obj)
    for key, value in obj.items():
        node = plan.get(key)
        if node is None:
            raise _NotFast
        if type(node) is dict:
            if type(value) is not dict:
                raise _NotFast
            keys, colons = _walk_fast(value, node, ts_ns, out, keys, colons)
            continue
        name, kind = node
        cls = type(value)
        if kind == "float":
            if cls is float:
                if value - value != 0.0:  # inf (1e999) or nan: not finite
                    raise _NotFast
            elif cls is int:
                if not -_FLOAT_MAX_INT <= value <= _FLOAT_MAX_INT:
                    raise _NotFast
                value = float(value)
            elif value is None:
                out.append(Reading(name, None, ts_ns, quality="bad", status="null in payload"))
                continue
            else:
                raise _NotFast
        elif kind == "int":
            if cls is float and value.is_integer():
                value = int(value)
                cls = int
            if cls is not int or not -_INT64 <= value < _INT64:
                if value is None:
                    out.append(Reading(name, None, ts_ns, quality="bad", status="null in payload"))
                    continue
                raise _NotFast
        elif kind == "bool":
            if cls is not bool:
                if value is None:
                    out.append(Reading(name, None, ts_ns, quality="bad", status="null in payload"))
                    continue
                raise _NotFast
        else:
            if cls is not str:
                if value is None:
                    out.append(Reading(name, None, ts_ns, quality="bad", status="null in payload"))
                    continue
                raise _NotFast
            colons += value.count(":")
        out.append(Reading(name, value, ts_ns))
    return keys, colons


def parse_general(
    raw: bytes, *, machine: MachineConfig, topic: str, received_ns: int
) -> tuple[Ingest, int | None]:
    """The reference reading of a message: every check in document order, each refusal worded."""
    conn = machine.connection
    # Size first: an oversized message is refused before any work is spent on it.
    if len(raw) > conn.max_payload_bytes:
        raise MalformedPayload(f"payload is {len(raw)} bytes, limit {conn.max_payload_bytes}")
    if not raw:
        raise MalformedPayload("not JSON: empty payload")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedPayload(f"not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}") from None
    try:
        doc = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_parse_float, object_pairs_hook=_no_duplicate_keys
        )
    except json.JSONDecodeError as e:
        raise MalformedPayload(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise MalformedPayload("not JSON this agent reads: nested too deeply") from None
    except MalformedPayload:
        raise
    except ValueError as e:  # Python refuses integers of more than 4,300 digits (a denial-of-service guard)
        raise MalformedPayload(f"not JSON this agent reads: {str(e).split(';')[0]}") from None
    if not isinstance(doc, dict):
        raise MalformedPayload(f"top level: expected a JSON object, got {_describe(doc)}")
    for key in doc:
        if key not in _TOP_LEVEL:
            raise MalformedPayload(f"unknown field {key}: only ts, seq and values are allowed at the top level")
    ts_ns = _parse_ts(doc["ts"], conn.max_future_skew_s, received_ns) if "ts" in doc else None
    seq = None
    if "seq" in doc:
        seq = doc["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < _INT64:
            raise MalformedPayload(f"seq: expected a non-negative integer, got {_describe(seq)}")
    if "values" not in doc:
        raise MalformedPayload("values: missing (a message carries its signals in a 'values' object)")
    values = doc["values"]
    if not isinstance(values, dict):
        raise MalformedPayload(f"values: expected an object, got {_describe(values)}")
    tree = signal_map(machine).tree_for(topic)
    if not tree:
        raise MalformedPayload(f"topic {topic} carries no signal of {machine.id}")
    readings: list[Reading] = []
    _walk(values, tree, "values", machine.id, ts_ns, readings)
    return Ingest(machine_id=machine.id, readings=tuple(readings), received_ns=received_ns, origin=topic), seq
