"""Does InfluxDB keep the process data long enough? The retention of the database the server reads, against the
horizon a device's data must survive before its records are archived at release.

InfluxDB ends points silently when a retention policy (1.x) or bucket rule (2.x, through the 1.x compatibility
API as a mapped policy) expires them; a device still in production would lose its evidence before release, and
`dhr verify` could not tell expiry from tampering. The check reads `SHOW RETENTION POLICIES` and compares the
default policy's duration (0 = infinite) with `AMTRACE_INFLUX_MIN_RETENTION_DAYS`."""

from __future__ import annotations

from server.timeseries.influx import InfluxQL, TimeSeriesUnavailable, ident

# One parser for InfluxDB durations, shared with the agent (edge.influxtime imports nothing else).
from edge.influxtime import duration_s  # noqa: F401 - re-exported for the server's callers


def retention_warning(influx: InfluxQL, *, min_days: float) -> str | None:
    """A sentence when the default retention of the database is shorter than min_days (or cannot be read)."""
    try:
        [series] = influx.query(f"SHOW RETENTION POLICIES ON {ident(influx.database)}")
    except TimeSeriesUnavailable as e:
        return f"InfluxDB retention not checked: {e.detail}"
    rows = [r for s in series for r in s.rows()]
    default = next((r for r in rows if r.get("default")), rows[0] if rows else None)
    if default is None:
        return f"InfluxDB database {influx.database} has no retention policy"
    keep = duration_s(str(default.get("duration")))
    if keep < min_days * 86400:
        return (f"InfluxDB database {influx.database} keeps points {keep / 86400:g} days (retention policy "
                f"{default.get('name')}), less than the {min_days:g} days a device's data must survive before it "
                "is archived at release (AMTRACE_INFLUX_MIN_RETENTION_DAYS): extend the retention")
    return None
