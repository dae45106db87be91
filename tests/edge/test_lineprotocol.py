"""Line protocol rendering: escaping of tricky names, exact values, refusals; round trip through a real InfluxDB."""

from __future__ import annotations

import math
import urllib.request
import uuid

import pytest

from edge.lineprotocol import (
    escape_field_key,
    escape_measurement,
    escape_tag,
    render_field_value,
    render_line,
)


def test_measurement_escapes_comma_and_space_only():
    assert escape_measurement("laser power,main zone") == "laser\\ power\\,main\\ zone"
    # '=' needs no escape in a measurement: the first unescaped space ends it.
    assert escape_measurement("a=b") == "a=b"
    assert escape_measurement('say "hi"') == 'say\\ "hi"'


def test_tag_and_field_key_escape_comma_equals_space():
    assert escape_tag("device code=A, B") == "device\\ code\\=A\\,\\ B"
    assert escape_field_key("t=1, x") == "t\\=1\\,\\ x"
    # Backslashes inside stay as they are (InfluxDB does not unescape '\\' in names).
    assert escape_tag("C:\\jobs\\a b") == "C:\\jobs\\a\\ b"


@pytest.mark.parametrize("bad", ["", "a\nb", "a\rb", "ends\\"])
def test_names_refused(bad):
    for fn in (escape_measurement, escape_tag, escape_field_key):
        with pytest.raises(ValueError):
            fn(bad)


def test_comment_measurement_and_time_key_refused():
    with pytest.raises(ValueError, match="comment"):
        escape_measurement("#notes")
    with pytest.raises(ValueError, match="reserved"):
        escape_field_key("time")
    with pytest.raises(ValueError, match="reserved"):
        render_line("m", {"time": "x"}, {"f": 1.0}, 1)


def test_float_values_are_exact():
    for v in (0.1, 1 / 3, 1e16, 1.5e-7, -0.0, 123456789.123456789, 2.0**-1074, 1.7976931348623157e308):
        text = render_field_value(v)
        assert float(text) == v and math.copysign(1, float(text)) == math.copysign(1, v)
    assert render_field_value(21.5) == "21.5"
    assert render_field_value(3.0) == "3.0"


def test_int_bool_str_values():
    assert render_field_value(12) == "12i"
    assert render_field_value(-(2**63)) == f"{-(2**63)}i"
    assert render_field_value(True) == "true"
    assert render_field_value(False) == "false"
    assert render_field_value('he said "ok" \\ done') == '"he said \\"ok\\" \\\\ done"'
    assert render_field_value("a, b=c") == '"a, b=c"'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, "x\ny", None, b"x"])
def test_values_refused(bad):
    with pytest.raises(ValueError):
        render_field_value(bad)


def test_render_line_sorts_tags_and_omits_empty():
    line = render_line(
        "melt pool",
        {"machine": "m-1", "device": "DC 001,A", "job": "", "b": "x=y"},
        {"temp": 1650.5, "count": 3, "ok": True, "note": "fine"},
        1_700_000_000_123_456_789,
    )
    assert line == (
        'melt\\ pool,b=x\\=y,device=DC\\ 001\\,A,machine=m-1 '
        'temp=1650.5,count=3i,ok=true,note="fine" 1700000000123456789'
    )


def test_render_line_refuses_no_fields_and_bad_timestamp():
    with pytest.raises(ValueError, match="no field"):
        render_line("m", {}, {}, 1)
    with pytest.raises(ValueError):
        render_line("m", {}, {"f": 1.0}, 1.5)
    with pytest.raises(ValueError):
        render_line("m", {}, {"f": 1.0}, True)


def test_tricky_names_round_trip_through_influxdb(influxdb):
    """What we render is what InfluxDB 1.x stores: names, tag values and values come back identical."""
    db = "lp_" + uuid.uuid4().hex[:8]
    influxdb.create_database(db)
    tags = {"device code": "DC,001 =x", "path": "C:\\jobs\\a b", "quote": 'say "hi"'}
    fields = {"temp, max": 0.1, "n=1": 7, "ok": False, "msg": 'a "q" \\ b, c=d'}
    line = render_line("melt pool,zone", tags, fields, 1_700_000_000_000_000_001)
    req = urllib.request.Request(f"{influxdb.url}/write?db={db}&precision=ns", data=line.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    res = influxdb.query('SELECT * FROM "melt pool,zone"', db)["results"][0]["series"][0]
    row = dict(zip(res["columns"], res["values"][0]))
    assert row["time"] == 1_700_000_000_000_000_001
    assert row["device code"] == "DC,001 =x"
    assert row["path"] == "C:\\jobs\\a b"
    assert row["quote"] == 'say "hi"'
    assert row["temp, max"] == 0.1
    assert row["n=1"] == 7
    assert row["ok"] is False
    assert row["msg"] == 'a "q" \\ b, c=d'
