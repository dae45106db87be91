"""Process settings from the environment (prefix AMTRACE_); default secrets are refused outside development."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "development-only-secret-key-change-me"
DEFAULT_AUDIT_KEY = "development-only-audit-key-change-me"

# Maintenance kinds that change the machine's performance enough to need requalification
# (FDA-AM V.F(2); 820.75(c)): laser/optics/scanner replacement and major repair.
class MaintenanceKind(BaseModel):
    """One kind of maintenance the plant logs (AMTRACE_MAINTENANCE_KINDS, JSON: {kind: {label, preventive, …}})."""

    label: str = Field(min_length=3, max_length=100)
    preventive: bool = Field(default=False, description=(
        "The machine's planned maintenance: logging it sets the next due date to today + the machine's interval"))
    requalifying: bool = Field(default=False, description=(
        "Replaces or repairs something the machine's qualification relies on: its qualified scopes need "
        "requalification"))


DEFAULT_MAINTENANCE_KINDS = {
    "preventive_maintenance": {"label": "Preventive maintenance (per the machine's interval)", "preventive": True},
    "filter_change": {"label": "Filter change"},
    "recoater_blade_change": {"label": "Recoater blade change"},
    "inspection": {"label": "Inspection"},
    "cleaning": {"label": "Cleaning"},
    "minor_repair": {"label": "Minor repair"},
    "laser_replaced": {"label": "Laser replaced", "requalifying": True},
    "optics_replaced": {"label": "Optics replaced", "requalifying": True},
    "scanner_replaced": {"label": "Scanner replaced", "requalifying": True},
    "recoater_replaced": {"label": "Recoater replaced", "requalifying": True},
    "major_repair": {"label": "Major repair", "requalifying": True},
}

# The cycles a device needs before release, per stage: which processes may serve it. Safe by default: a
# product family without its own route must be cleaned and sterilized by a validated, recorded cycle.
CYCLE_STAGES = ("post_processing", "cleaning", "sterilization")
CYCLE_PROCESSES = ("steam", "ethylene_oxide", "radiation", "heat_treatment", "cleaning")
DEFAULT_ROUTE: dict[str, list[str]] = {"cleaning": ["cleaning"], "sterilization": ["steam", "ethylene_oxide", "radiation"]}

# Typical lead time of each stage in hours (unconfirmed: plant-specific, hence configurable).
DEFAULT_STAGE_HOURS = {
    "build": 48, "post_processing": 48, "cleaning": 24, "sterilization": 24,
    "inspection": 24, "release": 24, "delivery": 48,
}


class RetentionRule(BaseModel):
    """How long a product family's records are kept after release."""

    model_config = ConfigDict(extra="forbid")

    lifetime_years: float = Field(ge=0, le=200, description="Expected lifetime of the device as the manufacturer "
                                                              "defines it")
    extra_years: float = Field(default=0.0, ge=0, le=100, description="Years kept beyond the lifetime")


class Settings(BaseSettings):
    """Every setting of the amtrace server; each can be set as AMTRACE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="AMTRACE_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="production", description=(
            "production (the default) refuses to start without private keys; development, set explicitly, allows "
            "the built-in public keys (tests, a laptop)"))
    database_url: str = Field(default="sqlite:///./var/server.db", description="SQLAlchemy URL of the records database")
    secret_key: str = Field(default=DEFAULT_SECRET_KEY, description="Key that signs access tokens (JWT HS256)")
    audit_key: str = Field(
        default=DEFAULT_AUDIT_KEY,
        description="Key of the HMAC that chains audit entries and seals signatures; keep it out of the database")
    metrics_token: str | None = Field(default=None, description=(
        "Bearer token Prometheus sends to scrape /metrics (an administrator's access token also works); unset: only "
        "administrators"))
    access_token_minutes: int = Field(default=15, ge=1, le=240, description="Lifetime of a user's access token")
    argon2_time_cost: int = Field(default=3, ge=1, description="Argon2id iterations")
    argon2_memory_kib: int = Field(default=65536, ge=8, description="Argon2id memory in KiB")
    argon2_parallelism: int = Field(default=4, ge=1, description="Argon2id lanes")
    max_failed_logins: int = Field(default=5, ge=1, description=(
        "Consecutive failed credential checks (login, badge, signature) that lock an account"))
    lockout_s: float = Field(default=60.0, gt=0, description=(
        "How long a lockout lasts the first time; each further failure after it doubles it"))
    lockout_max_s: float = Field(default=3600.0, gt=0, description="The longest a lockout lasts")
    login_rate_per_min: int = Field(default=30, ge=1, description=(
        "Login attempts one client address may make per minute (per server process); more answer 429"))
    file_store: str = Field(default="./var/files", description="Folder where design files are kept by SHA-256")
    archive_dir: str | None = Field(default=None, description=(
        "Folder where each released device's self-contained archive is written once (read-only files); default: "
        "archives/ in the file store. Back it up with the database (amtrace-server backup does)"))
    archive_sweep_s: float = Field(default=600.0, ge=0, description=(
        "How often a running server archives sealed devices whose archive is missing (a release whose archive "
        "step failed or was interrupted); 0: never (run amtrace-server dhr archive --pending)"))
    audit_anchor_file: str | None = Field(default=None, description=(
        "File outside the database where the head of the audit chain is written (append-only JSON lines); "
        "`audit verify` checks the chain still holds every head written there. Copy it elsewhere too. "
        "Default: audit-anchors.jsonl in the file store"))
    audit_anchor_interval_s: float = Field(default=3600.0, gt=0, description=(
        "How often a running server writes the chain head to the anchor file"))
    @property
    def anchor_path(self) -> str:
        """Where the audit chain's head is anchored (audit_anchor_file, else beside the stored files)."""
        return self.audit_anchor_file or str(Path(self.file_store) / "audit-anchors.jsonl")

    device_code_format: str = Field(
        default="AMT-{year}-{seq:06d}",
        description="Internal device code; fields: {year} (4 digits), {yy}, {seq} (per-year counter), {site}")
    site_code: str = Field(default="S1", description="Plant site code used in device codes")
    udi_expiry_days: int | None = Field(
        default=None, description="Days from production to expiry for AI (17); none = no expiry in the UDI")
    operator_presence_minutes: int = Field(default=30, ge=1, le=24 * 60, description=(
        "How long an operator's identification at the kiosk for a job lets an edge agent name them in its gate "
        "request for that job"))
    maintenance_kinds: dict[str, MaintenanceKind] = Field(
        default_factory=lambda: {k: MaintenanceKind(**v) for k, v in DEFAULT_MAINTENANCE_KINDS.items()},
        description=("The kinds of maintenance that may be logged; requalifying ones move the machine's qualified "
                     "scopes to requalification_required, preventive ones set the next due date"))
    stage_hours: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_STAGE_HOURS), description="Default deadline of each stage, in hours")
    overdue_check_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "How often the server looks for steps that became overdue and notifies production of each, once"))
    max_design_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, description=(
        "Largest design or build file an iteration may carry; larger uploads answer 413"))
    max_photo_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description=(
        "Largest photo of a nonconformity or manual step; larger ones answer 413"))
    notify_webhook_url: str | None = Field(default=None, pattern=r"^https?://", description=(
        "Where every notification is also POSTed as JSON (one per person and notice, with the person's username, "
        "for a mail, chat or pager gateway to route); none = notifications stay in amtrace"))
    notify_webhook_secret: str | None = Field(default=None, description=(
        "Key of the HMAC-SHA256 sent as X-Amtrace-Signature: sha256=<hex> over the body, so the receiver knows "
        "the message is from this server; set it in the environment, never in the repository"))
    notify_push_interval_s: float = Field(default=5.0, gt=0, le=3600, description=(
        "How often the server pushes notifications not yet taken by the webhook (failed ones back off)"))
    notify_push_max_age_h: float = Field(default=24.0, gt=0, description=(
        "Notifications older than this are not pushed (a webhook configured today does not replay a year)"))
    delivery_margin_days: int = Field(
        default=2, ge=0, description="The case deadline is this many days before the surgery date")
    routes: dict[str, dict[str, list[str]]] = Field(default_factory=dict, description=(
        "Per product family, the cycle steps a device needs before release: {family: {stage: [process, ...]}} "
        "with stage in post_processing | cleaning | sterilization and process in steam | ethylene_oxide | "
        "radiation | heat_treatment | cleaning; a family not listed follows DEFAULT_ROUTE (cleaning, then "
        "steam, ethylene oxide or radiation sterilization). As JSON in AMTRACE_ROUTES"))
    timezone: str = Field(default="UTC", description="Time zone used in messages shown to people")
    gate_threads: int = Field(default=1, ge=1, le=64, description=(
        "Threads per server process that run release-gate decisions. 1 is fastest with the database on the "
        "same host (SQLite writes are one at a time anyway; more threads only contend for the GIL); raise it "
        "when PostgreSQL is on another host, where each decision waits for ~24 network round trips"))
    influx_url: str = Field(default="http://127.0.0.1:8086", description=(
        "Base URL of the InfluxDB 1.x-compatible HTTP API (/query, InfluxQL): InfluxDB 1.x, 2.x compat, 3.x"))
    influx_database: str = Field(default="amtrace", description="InfluxDB database (2.x/3.x: the mapped bucket)")
    influx_username: str | None = Field(default=None, description="InfluxDB user (2.x compat: any name)")
    influx_password: str | None = Field(default=None, description=(
        "InfluxDB password or API token; set AMTRACE_INFLUX_PASSWORD in the environment, never in a file"))
    influx_min_retention_days: float = Field(default=730.0, gt=0, description=(
        "How long InfluxDB must keep points: the production time of a device plus its wait for release and archive "
        "(2 years by default). A shorter retention is a warning in /readyz and the log"))
    influx_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one InfluxQL request")
    retention_lifetime_years: float = Field(default=30.0, ge=0, le=200, description=(
        "Expected lifetime of a device whose product family has no rule of its own (an implant stays in a patient "
        "for decades: 30 years unless the manufacturer defines it)"))
    retention_extra_years: float = Field(default=2.0, ge=0, le=100, description=(
        "Years records are kept beyond the lifetime, when the product family has no rule of its own"))
    retention_families: dict[str, RetentionRule] = Field(default_factory=dict, description=(
        'Rules per product family, JSON: {"acetabular_cup": {"lifetime_years": 25, "extra_years": 5}}'))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v)
        except ArgumentError:
            raise ValueError("not a database URL (e.g. sqlite:///var/server.db or "
                             "postgresql+psycopg://user@host/amtrace)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"{url.get_backend_name()} is not a database amtrace runs on (sqlite or "
                             f"postgresql)")
        return v

    @model_validator(mode="after")
    def _check_routes(self) -> "Settings":
        for family, route in self.routes.items():
            for stage, processes in route.items():
                if stage not in CYCLE_STAGES:
                    raise ValueError(f"routes[{family!r}]: stage {stage!r} is not a cycle stage "
                                     f"({', '.join(CYCLE_STAGES)})")
                unknown = [p for p in processes if p not in CYCLE_PROCESSES]
                if unknown or not processes:
                    raise ValueError(f"routes[{family!r}][{stage!r}]: {', '.join(map(repr, unknown)) or 'no process'}"
                                     f" — each stage lists one or more of {', '.join(CYCLE_PROCESSES)}")
        return self

    def route_for(self, family: str) -> dict[str, list[str]]:
        """The cycle steps a device of this product family needs before release, stage → allowed processes."""
        return self.routes.get(family, DEFAULT_ROUTE)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.environment != "development":
            weak = [n for n, v, d in (("AMTRACE_SECRET_KEY", self.secret_key, DEFAULT_SECRET_KEY),
                                      ("AMTRACE_AUDIT_KEY", self.audit_key, DEFAULT_AUDIT_KEY))
                    if v == d or len(v) < 32]
            if weak:
                raise ValueError(
                    f"{', '.join(weak)} must be set to a private value of at least 32 characters "
                    f"when AMTRACE_ENVIRONMENT={self.environment} (for a laptop or tests, set "
                    f"AMTRACE_ENVIRONMENT=development explicitly)")
            plain = [n for n, v in (("AMTRACE_SECRET_KEY", self.secret_key), ("AMTRACE_AUDIT_KEY", self.audit_key))
                     if not looks_random(v)]
            if plain:
                raise ValueError(f"{', '.join(plain)} does not look random (too few different characters, or one "
                                 f"repeated): generate it, e.g. python -c 'import secrets; "
                                 f"print(secrets.token_urlsafe(48))'")
            if self.secret_key == self.audit_key:
                raise ValueError("AMTRACE_SECRET_KEY and AMTRACE_AUDIT_KEY must differ: one signs access tokens, the "
                                 "other keys the audit chain, and knowing one must not give the other")
            if self.notify_webhook_url and len(self.notify_webhook_secret or "") < 32:
                raise ValueError(f"AMTRACE_NOTIFY_WEBHOOK_SECRET must be set (at least 32 characters) with "
                                 f"AMTRACE_NOTIFY_WEBHOOK_URL when AMTRACE_ENVIRONMENT={self.environment}: "
                                 f"the receiver must be able to tell our messages from forged ones")
        return self


def looks_random(key: str) -> bool:
    """A key made by a random generator, not typed: at least 10 different characters and none more than a
    quarter of it (refuses "aaaa…", "abab…"; any secrets.token_urlsafe(32) or token_hex(32) passes)."""
    most = max(key.count(c) for c in set(key)) if key else 0
    return len(set(key)) >= 10 and most <= len(key) / 4


@lru_cache
def get_settings() -> Settings:
    """Settings read once from the environment."""
    return Settings()
