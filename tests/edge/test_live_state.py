"""The live state an agent sends with its heartbeat: alerts are active while their cause lasts and clear with the
event that ends it; key signals carry a 30-minute trend."""

from __future__ import annotations

from types import SimpleNamespace

from edge.config import Limits
from edge.live import RECENT_NS, LiveState
from edge.readings import Event, Ingest, Reading

MIN = 60_000_000_000


def _live(signals=()) -> LiveState:
    return LiveState([SimpleNamespace(id="lpbf-01", signals=list(signals))])


def _o2(value, ts, severity="alarm", kind="excursion"):
    return Event("lpbf-01", kind, f"chamber_o2 {value} ppm", ts, severity, {"signal": "chamber_o2", "value": value})


def test_an_excursion_is_one_active_alert_that_escalates_and_clears_when_back_within_limits():
    live = _live()
    live.alert(_o2(600, 10, "warning"))
    live.alert(_o2(1031, 20, "alarm"))
    [alert] = live.alerts_of("lpbf-01", 30)
    assert (alert["state"], alert["severity"], alert["since_ns"], alert["message"]) == \
        ("active", "alarm", 10, "chamber_o2 1031 ppm"), "warning then alarm is one cause, since its start"
    live.alert(_o2(300, 40, "info", "excursion_end"))
    [alert] = live.alerts_of("lpbf-01", 50)
    assert (alert["state"], alert["cleared_ns"], alert["since_ns"]) == ("cleared", 40, 10)
    assert live.alerts_of("lpbf-01", 40 + RECENT_NS + 1) == [], "a cleared alert drops off after 30 min"


def test_build_blocked_clears_when_the_start_is_enabled_and_other_causes_stay():
    live = _live()
    live.alert(Event("lpbf-01", "identity_unknown", "identity unknown: requalification triggers are blind", 1, "alarm"))
    live.alert(Event("lpbf-01", "build_file_check", "job1.stl: identical, BUILD BLOCKED: job 1 is not released",
                     2, "alarm"))
    live.alert(Event("lpbf-01", "interlock", "start enabled set to false; reason: not released", 3, "warning"))
    active = [a for a in live.alerts_of("lpbf-01", 4) if a["state"] == "active"]
    assert [(a["key"], a["since_ns"]) for a in active] == [("identity", 1), ("start", 2)]
    live.alert(Event("lpbf-01", "interlock", "start enabled set to true; reason: released", 5, "info"))
    alerts = live.alerts_of("lpbf-01", 6)
    assert [(a["key"], a["state"]) for a in alerts] == [("identity", "active"), ("start", "cleared")]
    live.alert(Event("lpbf-01", "identity", "EOS M 290 serial 1", 7, "info"))
    assert [a["state"] for a in live.alerts_of("lpbf-01", 8)] == ["cleared", "cleared"]


def test_one_off_events_are_events_and_info_without_a_cause_is_no_alert():
    live = _live()
    live.alert(Event("lpbf-01", "connection_restored", "restored", 1, "info"))
    assert live.alerts_of("lpbf-01", 2) == []
    live.alert(Event("lpbf-01", "gap", "no data for 4.0 s", 3, "warning"))
    [gap] = live.alerts_of("lpbf-01", 4)
    assert (gap["state"], gap["key"]) == ("event", None)


def test_key_signals_get_a_per_minute_trend_and_the_rest_none():
    sig = lambda name, limits=None, role=None, type="float": SimpleNamespace(  # noqa: E731
        name=name, unit="ppm", type=type, role=role, limits=limits)
    live = _live([sig("chamber_o2", Limits(warn_high=500, alarm_high=1000)), sig("laser_power"),
                  sig("state", role="machine_state", type="str")])
    t0 = 1_767_225_600 * 1_000_000_000
    for i, v in enumerate([100.0, 1031.0, 200.0]):
        live.observe([Ingest("lpbf-01", [Reading("chamber_o2", v, t0 + i * 1_000_000_000),
                                         Reading("state", "BUILDING", t0)], t0 + i)])
    live.observe([Ingest("lpbf-01", [Reading("chamber_o2", 50.0, t0 + MIN)], t0 + MIN)])
    [trend] = live.trends_of("lpbf-01", t0 + MIN)
    assert trend["signal"] == "chamber_o2" and trend["limits"] == {"warn_high": 500, "alarm_high": 1000}
    assert trend["points"] == [[t0 // 10**9, 100.0, 1031.0, 200.0], [t0 // 10**9 + 60, 50.0, 50.0, 50.0]], \
        "a one-sample spike is kept as the minute's max"
    assert live.machines["lpbf-01"].machine_state == "BUILDING"
    assert live.machines["lpbf-01"].last_data_ns == t0 + MIN
    assert live.trends_of("lpbf-01", t0 + 31 * MIN) == [{**trend, "points": [trend["points"][1]]}]
