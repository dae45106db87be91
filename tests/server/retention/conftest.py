"""Retention tests: the server's settings point at a private database of the session's real InfluxDB (a released
device is sealed and archived, as in production)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cycles"))

from influx_settings import influx_database, settings  # noqa: E402,F401
