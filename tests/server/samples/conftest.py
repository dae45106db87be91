"""Sample tests read DHRs: the server's settings point at a private database of the session's real InfluxDB."""

import sys
from pathlib import Path

# The edge data feed (edge_feed.py) and the InfluxDB settings fixtures are shared with the cycle tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cycles"))

from influx_settings import influx_database, settings  # noqa: E402,F401
