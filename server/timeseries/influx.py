"""A small InfluxQL client over the 1.x HTTP /query API (InfluxDB 1.x, 2.x compatibility API, 3.x).

Every identifier and string literal that comes from a record or a request is escaped here, so a device
code can never change the meaning of a query; every time bound is an integer nanosecond literal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from server.errors import DomainError
from server.settings import Settings


class TimeSeriesUnavailable(DomainError):
    """InfluxDB could not be reached or refused a query."""

    status = 503


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, field or tag key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal (tag value)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ns(at: datetime | int) -> int:
    """Nanoseconds since the epoch of a UTC-aware datetime (ints pass through)."""
    if isinstance(at, int):
        return at
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def time_range(start: datetime | int, end: datetime | int) -> str:
    """WHERE fragment bounding a query to [start, end] (nanosecond literals)."""
    return f"time >= {ns(start)} AND time <= {ns(end)}"


@dataclass
class Series:
    """One series of a statement's answer: name, tags and rows (time in ns first)."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column."""
        return [dict(zip(self.columns, v)) for v in self.values]


class InfluxQL:
    """Runs InfluxQL statements against the configured database and returns their series."""

    def __init__(self, *, url: str, database: str, username: str | None = None, password: str | None = None,
                 timeout_s: float = 60.0):
        self.url = url.rstrip("/")
        self.database = database
        self._auth = (username or "", password) if password is not None else None
        self._client = httpx.Client(timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> "InfluxQL":
        """A client configured by the server settings."""
        return cls(url=settings.influx_url, database=settings.influx_database, username=settings.influx_username,
                   password=settings.influx_password, timeout_s=settings.influx_timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> "InfluxQL":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, *statements: str) -> list[list[Series]]:
        """Run statements in one request (chunked, so large answers stream); one list of series per statement."""
        if not statements:
            return []
        data = {"q": ";\n".join(statements), "db": self.database, "epoch": "ns", "chunked": "true",
                "chunk_size": "50000"}
        out: list[list[Series]] = [[] for _ in statements]
        try:
            with self._client.stream("POST", self.url + "/query", data=data, auth=self._auth) as resp:
                if resp.status_code != 200:
                    body = resp.read().decode(errors="replace")[:300]
                    raise TimeSeriesUnavailable(f"InfluxDB at {self.url} answered {resp.status_code}: {body}",
                                                code="timeseries_unavailable")
                for line in resp.iter_lines():
                    if line.strip():
                        self._merge(json.loads(line), out, statements)
        except httpx.HTTPError as e:
            raise TimeSeriesUnavailable(f"InfluxDB at {self.url} could not be reached: {e}",
                                        code="timeseries_unavailable") from e
        return out

    @staticmethod
    def _merge(chunk: dict, out: list[list[Series]], statements: tuple[str, ...]) -> None:
        if "error" in chunk:
            raise TimeSeriesUnavailable(f"InfluxDB refused the query: {chunk['error']}", code="timeseries_query")
        for result in chunk.get("results", []):
            sid = result.get("statement_id", 0)
            if "error" in result:
                raise TimeSeriesUnavailable(f"InfluxDB refused the query {statements[sid]!r}: {result['error']}",
                                            code="timeseries_query")
            for s in result.get("series", []):
                name, tags = s.get("name", ""), s.get("tags") or {}
                prev = out[sid][-1] if out[sid] else None
                # A chunked answer splits a long series over several chunks: append to the same series.
                if prev is not None and prev.name == name and prev.tags == tags and prev.columns == s["columns"]:
                    prev.values.extend(s.get("values", []))
                else:
                    out[sid].append(Series(name, tags, s["columns"], list(s.get("values", []))))
