"""Ships the outbox to InfluxDB: one writer, one transport module per API mode (v1.py, v2.py)."""

from edge.writer.errors import Retryable, TooLarge, WriteError, WriteRejected
from edge.writer.writer import InfluxWriter, WriterStats, make_transport

__all__ = ["InfluxWriter", "WriterStats", "make_transport", "WriteError", "WriteRejected", "TooLarge", "Retryable"]
