"""InfluxDB v2 write API transport (InfluxDB 1.8+, 2.x, 3.x): influxdb-client, synchronous, token/org/bucket."""

from __future__ import annotations

import os

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from edge.config import InfluxConfig
from edge.writer.errors import Retryable, classify


class V2Transport:
    """Writes line protocol through influxdb-client's WriteApi in SYNCHRONOUS mode (no hidden buffering)."""

    api = "v2"

    def __init__(self, cfg: InfluxConfig):
        self.cfg = cfg
        self.target = cfg.url.rstrip("/")
        token = None
        if cfg.token_env:
            token = os.environ.get(cfg.token_env)
            if token is None:
                raise ValueError(f"influx.token_env: environment variable {cfg.token_env} is not set")
        # retries=False (the library default, stated here on purpose): the writer owns the retry
        # policy, so the events and counters tell the truth about every failed attempt.
        self._client = InfluxDBClient(
            url=self.target, token=token, org=cfg.org, timeout=int(cfg.timeout_s * 1000),
            enable_gzip=cfg.gzip, retries=False,
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def prepare(self) -> None:
        """Nothing to prepare: buckets are created by the InfluxDB administrator, not by the agent."""

    def send(self, body: bytes | str) -> None:
        """Write one batch; return on success; raise WriteRejected, TooLarge or Retryable."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            self._write.write(bucket=self.cfg.bucket, org=self.cfg.org, record=data, write_precision=WritePrecision.NS)
        except ApiException as e:
            if e.status is None or e.status == 0:
                raise Retryable(None, None, str(e.message or e.reason)) from e
            message = e.message if isinstance(e.message, str) else (e.body or b"").decode("utf-8", "replace")
            raise classify(e.status, str(message).strip(), e.retry_after) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:  # connect, read, timeouts, protocol errors
            raise Retryable(None, None, f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        """Close the client and its connection pool."""
        self._write.close()
        self._client.close()
