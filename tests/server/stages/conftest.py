"""Stage tests: InfluxDB-backed settings (release evidence judges cycles from real time series)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cycles"))

from influx_settings import influx_database, settings  # noqa: E402,F401
