"""Does the database or bucket this agent writes keep points long enough? InfluxDB ends points silently when a
retention policy (1.x: `SHOW RETENTION POLICIES`) or a bucket's retention rule (2.x: the buckets API) expires
them; a device still in production would lose its evidence before its records are archived at release.

Checked at start and hourly (edge/agent.py) against `influx.min_retention_days`; a shorter retention, or one that
cannot be read, is a warning in /healthz and /status and the gauge `amtrace_influx_retention_short`."""

from __future__ import annotations

import os

import httpx

from edge.config import InfluxConfig
from edge.influxtime import duration_s

def _v1_retention_s(cfg: InfluxConfig) -> tuple[float, str]:
    auth = None
    if cfg.username:
        auth = httpx.BasicAuth(cfg.username, os.environ.get(cfg.password_env or "", ""))
    name = cfg.database.replace("\\", "\\\\").replace('"', '\\"')
    r = httpx.post(cfg.url.rstrip("/") + "/query", data={"q": f'SHOW RETENTION POLICIES ON "{name}"'}, auth=auth,
                   timeout=cfg.timeout_s)
    r.raise_for_status()
    result = r.json()["results"][0]
    if "error" in result:
        raise ValueError(result["error"])
    [series] = result["series"]
    rows = [dict(zip(series["columns"], v)) for v in series["values"]]
    wanted = next((x for x in rows if x["name"] == cfg.retention_policy), None) if cfg.retention_policy else \
        next((x for x in rows if x.get("default")), rows[0] if rows else None)
    if wanted is None:
        raise ValueError(f"retention policy {cfg.retention_policy or '(default)'} not found")
    return duration_s(str(wanted["duration"])), f"database {cfg.database}, retention policy {wanted['name']}"


def _v2_retention_s(cfg: InfluxConfig) -> tuple[float, str]:
    from influxdb_client import InfluxDBClient

    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    with InfluxDBClient(url=cfg.url, token=token, org=cfg.org, timeout=int(cfg.timeout_s * 1000)) as client:
        bucket = client.buckets_api().find_bucket_by_name(cfg.bucket)
    if bucket is None:
        raise ValueError(f"bucket {cfg.bucket} not found")
    rules = [r.every_seconds for r in (bucket.retention_rules or []) if r.every_seconds]
    return (min(rules) if rules else float("inf")), f"bucket {cfg.bucket}"


def retention_warning(cfg: InfluxConfig) -> str | None:
    """A sentence when what the agent writes is kept shorter than cfg.min_retention_days, or cannot be read."""
    try:
        keep, what = (_v1_retention_s if cfg.api == "v1" else _v2_retention_s)(cfg)
    except Exception as e:  # noqa: BLE001 - any failure to read it is itself the warning
        return f"InfluxDB retention not checked ({cfg.url}): {type(e).__name__}: {str(e)[:200]}"
    if keep < cfg.min_retention_days * 86400:
        return (f"InfluxDB {what} keeps points {keep / 86400:g} days, less than the {cfg.min_retention_days:g} days "
                "a device's data must survive until it is archived at release (influx.min_retention_days): "
                "extend the retention")
    return None
