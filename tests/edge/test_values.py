"""One coercion rule for every connector (edge/values.py): what the time-series store would refuse for ever is
refused at the door, with the reason, whichever protocol brought it."""

from __future__ import annotations

import pytest

from edge.connectors.opcua.connector import _coerce as from_opcua
from edge.values import coerce


@pytest.mark.parametrize("type_,value,reason", [
    ("int", 2**63, "integer of 19 digits does not fit in 64 bits"),
    ("int", 2.5, "expected an integer, got number 2.5"),
    ("float", 10**400, "too large for a measurement"),
    ("float", float("nan"), "nan is not a measurement"),
    ("float", True, "expected a number, got boolean true"),
    ("bool", 1, "expected true or false, got integer 1"),
    ("str", "line\nbreak", "string holds a line break"),
    ("str", "\udcff", "unpaired surrogate \\udcff"),
])
def test_values_the_store_cannot_keep_are_refused_with_the_reason(type_, value, reason):
    with pytest.raises(ValueError) as e:
        coerce(type_, value)
    assert reason in str(e.value)


def test_values_that_fit_come_back_as_the_signal_type():
    assert coerce("int", 12.0) == 12 and type(coerce("int", 12.0)) is int
    assert coerce("float", 3) == 3.0 and coerce("bool", False) is False and coerce("str", "ok") == "ok"


def test_opcua_keeps_its_own_conversions_and_then_the_same_rule():
    assert from_opcua(True, "float") == 1.0 and from_opcua(1, "bool") is True
    assert from_opcua(42, "str") == "42"
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        from_opcua(2**64, "int")
    with pytest.raises(ValueError, match="line break"):
        from_opcua("two\nlines", "str")
