"""Cycle tests: the server's settings point at a private database of the session's real InfluxDB."""

from influx_settings import influx_database, settings  # noqa: F401 - fixtures shared with tests/server/history
