"""InfluxDB 1.x HTTP API transport: POST /write?db=&rp=&precision=ns, gzip body, optional basic auth."""

from __future__ import annotations

import gzip
import os

import httpx

from edge.config import InfluxConfig
from edge.writer.errors import Retryable, classify

# Messages of a 400 that concern the whole request, not any line in it: bisecting would wrongly
# quarantine every line, so they are retried (an operator fixes the setup) instead.
_SETUP_ERRORS = ("database not found", "retention policy not found", "authorization failed", "user not found")


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error") or resp.text).strip()
    except (ValueError, AttributeError):
        return resp.text.strip() or resp.reason_phrase


class V1Transport:
    """Writes line protocol to InfluxDB 1.x (and the 1.x compatibility API of 2.x and 3.x)."""

    api = "v1"

    def __init__(self, cfg: InfluxConfig):
        self.cfg = cfg
        self.target = cfg.url.rstrip("/")
        self._params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            self._params["rp"] = cfg.retention_policy
        auth = None
        if cfg.username:
            password = os.environ.get(cfg.password_env, "") if cfg.password_env else ""
            if cfg.password_env and cfg.password_env not in os.environ:
                raise ValueError(f"influx.password_env: environment variable {cfg.password_env} is not set")
            auth = httpx.BasicAuth(cfg.username, password)
        self._client = httpx.Client(base_url=self.target, timeout=cfg.timeout_s, auth=auth)

    def prepare(self) -> None:
        """Create the database when configured to (idempotent); raise Retryable while the server is down."""
        if not self.cfg.create_database:
            return
        name = self.cfg.database.replace("\\", "\\\\").replace('"', '\\"')
        try:
            resp = self._client.post("/query", data={"q": f'CREATE DATABASE "{name}"'})
        except httpx.TransportError as e:
            raise Retryable(None, None, f"{type(e).__name__}: {e}") from e
        if resp.status_code >= 300:
            raise Retryable(resp.status_code, None, f"CREATE DATABASE failed: {_message(resp)}")
        try:
            results = resp.json().get("results", [])
        except ValueError:
            results = []
        errors = [r["error"] for r in results if isinstance(r, dict) and r.get("error")]
        if errors:
            raise Retryable(resp.status_code, None, f"CREATE DATABASE failed: {errors[0]}")

    def send(self, body: bytes | str) -> None:
        """POST one batch; return on 2xx; raise WriteRejected, TooLarge or Retryable."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.cfg.gzip:
            # Level 1: line protocol compresses ~10x even at the fastest level; CPU is the scarcer resource.
            data = gzip.compress(data, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = self._client.post("/write", params=self._params, content=data, headers=headers)
        except httpx.TransportError as e:  # connect, read, write, timeouts, protocol errors
            raise Retryable(None, None, f"{type(e).__name__}: {e}") from e
        if resp.status_code < 300:
            return
        message = _message(resp)
        if resp.status_code == 404 and self.cfg.create_database and "database not found" in message:
            self.prepare()
            raise Retryable(404, 0.0, message)  # created now: the writer sends again at once
        if resp.status_code == 400 and any(s in message for s in _SETUP_ERRORS):
            raise Retryable(400, None, message)
        raise classify(resp.status_code, message, resp.headers.get("Retry-After"))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

