"""InfluxDB durations ('720h0m0s', '0s' = infinite), read by the agent and the server alike (no dependencies)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_s(text: str) -> float:
    """An InfluxDB duration in seconds; '0s' (infinite retention) → inf."""
    parts = _PART.findall(text or "")
    if not parts:
        raise ValueError(f"not an InfluxDB duration: {text!r}")
    total = sum(float(n) * _SECONDS[u] for n, u in parts)
    return float("inf") if total == 0 else total
