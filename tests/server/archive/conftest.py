"""Archive tests: the server's settings point at a private database of the session's real InfluxDB."""

import sys
from pathlib import Path

# The edge data feed (edge_feed.py), the InfluxDB settings fixtures and the end-to-end device (madekit.py) are
# shared with the cycle and history tests.
for folder in ("cycles", "history"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / folder))

from influx_settings import influx_database, settings  # noqa: E402,F401
