"""The live state an agent sends with its heartbeat: standing conditions stay on the dashboard until cleared."""

from __future__ import annotations

from types import SimpleNamespace

from edge.readings import Event
from edge.live import LiveState


def _live() -> LiveState:
    return LiveState([SimpleNamespace(id="lpbf-01", signals=[])])


def test_identity_unknown_stays_until_the_identity_is_read_and_newer_alerts_do_not_push_it_away():
    live = _live()
    live.alert(Event("lpbf-01", "identity_unknown", "identity unknown: requalification triggers are blind", 1, "alarm"))
    for i in range(8):
        live.alert(Event("lpbf-01", "excursion", f"chamber_o2 {1000 + i} ppm", 10 + i, "alarm"))
    alerts = live.alerts_of("lpbf-01")
    assert alerts[0]["kind"] == "identity_unknown"
    assert [a["kind"] for a in alerts[1:]] == ["excursion"] * 5, "five latest alerts after the standing one"
    live.alert(Event("lpbf-01", "identity", "EOS M 290 serial 1", 20, "info"))
    assert [a["kind"] for a in live.alerts_of("lpbf-01")] == ["excursion"] * 5


def test_info_events_are_not_alerts():
    live = _live()
    live.alert(Event("lpbf-01", "connection_restored", "restored", 1, "info"))
    assert live.alerts_of("lpbf-01") == []
