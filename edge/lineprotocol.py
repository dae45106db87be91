"""InfluxDB line protocol: escape names, render field values and whole lines, exactly and portably.

Rules follow the InfluxDB line protocol reference as implemented by InfluxDB 1.x and 2.x
(models/points.go), which is what every target of amtrace parses:
- measurement: escape comma and space;
- tag keys, tag values, field keys: escape comma, equals sign and space;
- string field values: double-quoted, with backslash and double quote escaped;
- float: shortest exact decimal (repr), so the value InfluxDB stores is bit-identical;
- integer: ``12i`` (signed 64-bit); boolean: ``true`` / ``false``; timestamp: Unix ns.

Refused with ValueError, because InfluxDB would silently mangle or drop them:
newlines and carriage returns anywhere (one point must stay one line: the outbox and the
writer's bisection split on newline), NaN and infinities, integers beyond 64 bits,
empty names, a name or tag value ending in a backslash (the parser would read it as escaping
the next separator), a measurement starting with ``#`` (the line would be a comment) and the
key ``time`` (InfluxDB drops such a point).
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache
from typing import Mapping

from edge.readings import Value

__all__ = [
    "escape_measurement",
    "escape_tag",
    "escape_field_key",
    "render_field_value",
    "render_fields",
    "check_timestamp",
    "render_line",
    "series_key",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_MEASUREMENT_ESC = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESC = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESC = str.maketrans({"\\": "\\\\", '"': '\\"'})


def _check_name(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    if not text:
        raise ValueError(f"{what} must not be empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} contains a newline, which line protocol cannot carry")
    if text.endswith("\\"):
        raise ValueError(f"{what} {text!r} ends with a backslash, which line protocol would read as an escape")


# Names and tag values repeat endlessly (a few hundred signals, a few device codes), so the
# escaped form is cached: rendering is on the hot path of every reading.
@lru_cache(maxsize=65536)
def escape_measurement(name: str) -> str:
    """Escape a measurement name (comma, space); refuse empty, newline, trailing backslash, leading '#'."""
    _check_name(name, "measurement")
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} starts with '#', which makes the line a comment")
    return name.translate(_MEASUREMENT_ESC)


@lru_cache(maxsize=65536)
def escape_tag(text: str) -> str:
    """Escape a tag key or tag value (comma, equals, space); refuse empty, newline, trailing backslash."""
    _check_name(text, "tag key or value")
    return text.translate(_KEY_ESC)


@lru_cache(maxsize=65536)
def escape_field_key(key: str) -> str:
    """Escape a field key (comma, equals, space); refuse empty, newline, trailing backslash, 'time'."""
    _check_name(key, "field key")
    if key == "time":
        raise ValueError("field key 'time' is reserved by InfluxDB (the point would be dropped)")
    return key.translate(_KEY_ESC)


def render_field_value(value: Value) -> str:
    """Render one field value: float exact (repr), int as '12i', bool as true/false, str quoted."""
    # bool first: it is a subclass of int.
    if value is True:
        return "true"
    if value is False:
        return "false"
    cls = type(value)
    if cls is float:
        if not math.isfinite(value):
            raise ValueError(f"field value {value!r} is not finite; InfluxDB cannot store NaN or infinity")
        return repr(value)
    if cls is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer field value {value} does not fit in 64 bits")
        return f"{value}i"
    if cls is str:
        if "\n" in value or "\r" in value:
            raise ValueError("string field value contains a newline, which line protocol cannot carry")
        return '"' + value.translate(_STRING_ESC) + '"'
    # numpy scalars and other numeric types: keep their kind (integer or real).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return render_field_value(int(value))
    if isinstance(value, numbers.Real):
        return render_field_value(float(value))
    if isinstance(value, str):
        return render_field_value(str(value))
    raise ValueError(f"field value of type {cls.__name__} is not supported (float, int, bool or str)")


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """The escaped head of a line: measurement and tags sorted by key, empty tag values left out."""
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if value is None or value == "":
            continue
        if key == "time":
            raise ValueError("tag key 'time' is reserved by InfluxDB (the point would be dropped)")
        parts.append(f",{escape_tag(key)}={escape_tag(value)}")
    return "".join(parts)


def render_fields(fields: Mapping[str, Value]) -> str:
    """The field set of a line, in the mapping's order, as render_line writes it."""
    if not fields:
        raise ValueError("a point needs at least one field")
    out = []
    for k, v in fields.items():
        # Hot path: a finite float (v - v is 0.0 only for finite values) is its repr.
        if type(v) is float and v - v == 0.0:
            out.append(f"{escape_field_key(k)}={v!r}")
        else:
            out.append(f"{escape_field_key(k)}={render_field_value(v)}")
    return ",".join(out)


def check_timestamp(ts_ns: int) -> int:
    """The timestamp as a plain int, or ValueError when it is not integer ns within InfluxDB's range."""
    if type(ts_ns) is not int:
        if isinstance(ts_ns, bool) or not isinstance(ts_ns, numbers.Integral):
            raise ValueError(f"timestamp must be integer nanoseconds, got {type(ts_ns).__name__}")
        ts_ns = int(ts_ns)
    if not _INT64_MIN < ts_ns < _INT64_MAX:
        raise ValueError(f"timestamp {ts_ns} is outside InfluxDB's 64-bit nanosecond range")
    return ts_ns


def render_line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Value], ts_ns: int) -> str:
    """Render one point as a line (tags sorted by key, empty tag values left out, ns timestamp)."""
    if not fields:
        raise ValueError(f"point of measurement {measurement!r} has no field; InfluxDB needs at least one")
    ts_ns = check_timestamp(ts_ns)
    return f"{series_key(measurement, tags)} {render_fields(fields)} {ts_ns}"
