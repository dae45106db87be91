"""A machine's value brought to the type its signal declares, or a ValueError that says why: one rule for every
connector and the pipeline (issue 14: three copies had drifted; only MQTT refused integers past 64 bits).

The rule protects the time-series store as much as the record: a value InfluxDB refuses (a line break in text, an
integer past 64 bits, NaN) would be retried for ever, so it is refused here, where it can be quarantined or marked.
"""

from __future__ import annotations

import math
from typing import Any

from edge.readings import Value

INT64 = 2**63


def describe(value: Any) -> str:
    """A value as a person reads it in an error: its kind and, when short, itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}" if abs(value) < 10**18 else f"integer of {len(str(abs(value)))} digits"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def coerce(type_: str, value: Any) -> Value:
    """value as the signal type (float, int, bool, str) wants it; ValueError saying why it cannot be."""
    if type_ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {describe(value)}")
        try:
            v = float(value)
        except OverflowError:
            raise ValueError(f"{describe(value)} is too large for a measurement") from None
        if not math.isfinite(v):
            raise ValueError(f"{v} is not a measurement")
        return v
    if type_ == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 12.0 from a PLC that writes every number as a double
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if not -INT64 <= value < INT64:
            raise ValueError(f"{describe(value)} does not fit in 64 bits")
        return value
    if type_ == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {describe(value)}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"string holds an unpaired surrogate \\u{ord(value[e.start]):04x}") from None
    if "\n" in value or "\r" in value:
        # InfluxDB line protocol cannot carry a line break in a value: stored, it would be refused for ever.
        raise ValueError("string holds a line break, which the time-series database cannot store")
    return value
