"""Configuration: one YAML file per machine (configs/machines/*.yaml) and the agent's own file.

Everything is validated by pydantic models with extra="forbid"; a bad file is refused with a
message naming the file, the field and what was expected (ConfigError), never guessed around."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.connectors.registry import PLUGINS


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file, the field and what was expected."""


MachineKind = Literal[
    "lpbf_printer", "ebm_printer", "sla_printer", "dlp_printer", "fdm_printer", "binder_jet_printer",
    "furnace", "hip_press", "washer", "ultrasonic_cleaner", "steam_sterilizer", "eto_sterilizer",
    "depowdering_station", "cnc_mill", "inspection_station",
]

ValueType = Literal["float", "int", "bool", "str"]


class Limits(BaseModel):
    """Live limits of a numeric signal: warning and alarm bands; any may be absent."""

    model_config = ConfigDict(extra="forbid")

    warn_low: float | None = Field(default=None, description="Below this: warning excursion")
    warn_high: float | None = Field(default=None, description="Above this: warning excursion")
    alarm_low: float | None = Field(default=None, description="Below this: alarm excursion")
    alarm_high: float | None = Field(default=None, description="Above this: alarm excursion")

    @model_validator(mode="after")
    def _ordered(self) -> "Limits":
        for name in ("warn_low", "warn_high", "alarm_low", "alarm_high"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number")
        if self.alarm_low is not None and self.warn_low is not None and self.alarm_low > self.warn_low:
            raise ValueError("alarm_low must not be above warn_low")
        if self.alarm_high is not None and self.warn_high is not None and self.alarm_high < self.warn_high:
            raise ValueError("alarm_high must not be below warn_high")
        lows = [v for v in (self.warn_low, self.alarm_low) if v is not None]
        highs = [v for v in (self.warn_high, self.alarm_high) if v is not None]
        if lows and highs and max(lows) > min(highs):
            raise ValueError("low limits must be below high limits")
        return self

    def classify(self, value: float) -> tuple[str, str, float] | None:
        """Return (severity, side, limit) for an out-of-limit value, or None when within limits."""
        if self.alarm_low is not None and value < self.alarm_low:
            return "alarm", "low", self.alarm_low
        if self.alarm_high is not None and value > self.alarm_high:
            return "alarm", "high", self.alarm_high
        if self.warn_low is not None and value < self.warn_low:
            return "warning", "low", self.warn_low
        if self.warn_high is not None and value > self.warn_high:
            return "warning", "high", self.warn_high
        return None


# The protocols' models, joined from the registry: a machine file names its protocol in connection.type and each
# source carries the same tag (written by the machine model when the file leaves it out), so a mistake is
# reported against the right protocol's fields.
SignalSource = Annotated[Union[tuple(p.source for p in PLUGINS.values())], Field(discriminator="type")]
ConnectionConfig = Annotated[Union[tuple(p.config for p in PLUGINS.values())], Field(discriminator="type")]


class SignalConfig(BaseModel):
    """One signal of a machine: where it comes from, where it goes in InfluxDB, its unit and limits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Signal name, unique within the machine")
    description: str | None = Field(default=None, description="What the signal is, in words")
    source: SignalSource = Field(
        description="Where the value comes from, in the connection's protocol (see each connector's README)"
    )
    measurement: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="InfluxDB measurement")
    field: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="InfluxDB field")
    unit: str = Field(description="Unit of the value (SI or customary), e.g. 'W', 'ppm', 'degC', 'kPa', '1'")
    type: ValueType = Field(default="float", description="Value type: float, int, bool or str")
    limits: Limits | None = Field(default=None, description="Live limits (numeric signals only)")
    role: Literal["layer", "layers_total", "machine_state", "build_file_path"] | None = Field(
        default=None,
        description="What the agent takes from this signal: current layer, total layers, machine state (live "
                    "dashboard), or the path of the build file the machine loaded (checked like a dropped file)",
    )

    states: dict[int, str] | None = Field(
        default=None,
        description="Words for the codes of a numeric machine state (role machine_state), e.g. {0: idle, 3: hold}: "
                    "the dashboard shows the word; a code not listed shows as 'state <code>'",
    )

    @model_validator(mode="after")
    def _limits_numeric(self) -> "SignalConfig":
        if self.limits is not None and self.type not in ("float", "int"):
            raise ValueError(f"limits are only allowed on numeric signals, not on type '{self.type}'")
        if self.states is not None and (self.role != "machine_state" or self.type != "int"):
            raise ValueError("states (words for state codes) belong on an int signal with role machine_state")
        return self


class BuildVolume(BaseModel):
    """Usable build volume of a printer in millimetres (x, y, z from the plate origin)."""

    model_config = ConfigDict(extra="forbid")

    x_mm: float = Field(gt=0, description="Usable X extent in mm")
    y_mm: float = Field(gt=0, description="Usable Y extent in mm")
    z_mm: float = Field(gt=0, description="Usable Z extent in mm")


class BuildFileWatch(BaseModel):
    """Where a build file reaching this machine is detected."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(default=None, description="Folder the build-preparation software drops build files into")
    patterns: list[str] = Field(default_factory=lambda: ["*.stl", "*.3mf"], description="File name patterns to check")
    mqtt_topic: str | None = Field(
        default=None,
        description="MQTT topic (on the machine's broker) where a build file is announced as "
                    '{"path": ...} or carried as {"file_name": ..., "content_base64": ...}',
    )
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, description="Largest build file accepted")


class MachineConfig(BaseModel):
    """One machine: identity, connection and signal map (configs/machines/<id>.yaml)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-_]*$", description="Machine id, also the InfluxDB 'machine' tag")
    kind: MachineKind = Field(description="What kind of machine this is")
    manufacturer: str = Field(description="Manufacturer as on the nameplate")
    model: str = Field(description="Model as on the nameplate")
    serial: str = Field(description="Serial number as on the nameplate")
    site: str | None = Field(default=None, description="Site and room where the machine is installed")
    connection: ConnectionConfig = Field(
        description=f"Protocol and connection; 'type' is one of {', '.join(PLUGINS)}")
    signals: list[SignalConfig] = Field(min_length=1, description="Signal map")
    build_volume: BuildVolume | None = Field(default=None, description="Build volume (printers)")
    build_files: BuildFileWatch | None = Field(default=None, description="Where build files are detected (printers)")
    allow_geometry_equal: bool = Field(
        default=False,
        description="Whether a build file with the approved geometry but different bytes may build; off by default",
    )

    @model_validator(mode="before")
    @classmethod
    def _tag_sources(cls, data: Any) -> Any:
        """A source without `type` is in the connection's protocol (the usual file leaves it out)."""
        if not isinstance(data, dict) or not isinstance(data.get("signals"), list):
            return data
        protocol = data.get("connection", {}).get("type") if isinstance(data.get("connection"), dict) else None
        if isinstance(protocol, str) and protocol not in PLUGINS:
            # One clear line instead of one "cannot tell the protocol" per signal.
            raise ValueError(f"connection.type '{protocol}' is not a known protocol (known: {', '.join(PLUGINS)})")
        if protocol is None:
            return data  # the connection's own error says what is wrong
        signals = [{**s, "source": {"type": protocol, **s["source"]}}
                   if isinstance(s, dict) and isinstance(s.get("source"), dict) else s for s in data["signals"]]
        return {**data, "signals": signals}

    @model_validator(mode="after")
    def _consistent(self) -> "MachineConfig":
        seen: set[str] = set()
        targets: dict[tuple[str, str], str] = {}
        for s in self.signals:
            if s.name in seen:
                raise ValueError(f"signal name '{s.name}' is used twice")
            seen.add(s.name)
            if s.source.type != self.connection.type:
                raise ValueError(
                    f"signal '{s.name}' has a {s.source.type} source but the connection type is "
                    f"'{self.connection.type}'"
                )
            key = (s.measurement, s.field)
            if key in targets:
                raise ValueError(
                    f"signals '{targets[key]}' and '{s.name}' both write {s.measurement}.{s.field}"
                )
            targets[key] = s.name
        if self.build_files and self.build_files.mqtt_topic and self.connection.type != "mqtt":
            raise ValueError("build_files.mqtt_topic needs an MQTT connection (the topic is on the machine's broker)")
        return self

    def signal(self, name: str) -> SignalConfig | None:
        """The signal called name, or None."""
        return self._by_name().get(name)

    def _by_name(self) -> dict[str, SignalConfig]:
        cache = self.__dict__.get("_signal_index")
        if cache is None:
            cache = {s.name: s for s in self.signals}
            self.__dict__["_signal_index"] = cache
        return cache


class InfluxConfig(BaseModel):
    """Where and how the agent writes to InfluxDB."""

    model_config = ConfigDict(extra="forbid")

    api: Literal["v1", "v2"] = Field(
        default="v1", description="v1: /write (InfluxDB 1.x); v2: influxdb-client (InfluxDB 1.8+, 2.x, 3.x)"
    )
    url: str = Field(default="http://127.0.0.1:8086", description="Base URL of the InfluxDB HTTP API")
    database: str = Field(default="amtrace", description="v1: database name")
    retention_policy: str | None = Field(default=None, description="v1: retention policy; absent = default")
    username: str | None = Field(default=None, description="v1: user name")
    password_env: str | None = Field(default=None, description="v1: environment variable holding the password")
    org: str = Field(default="amtrace", description="v2: organisation")
    bucket: str = Field(default="amtrace", description="v2: bucket")
    token_env: str | None = Field(default=None, description="v2: environment variable holding the API token")
    batch_lines: int = Field(default=5000, ge=1, le=100_000, description="Lines per write request")
    gzip: bool = Field(default=True, description="Compress write requests")
    timeout_s: float = Field(default=10.0, gt=0, description="Write request timeout")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between retries")
    create_database: bool = Field(default=True, description="v1: create the database at start if missing")
    min_retention_days: float = Field(default=730, ge=0, description=(
        "Warn when the database or bucket keeps points shorter than this (until devices are released and archived)"))


class OutboxConfig(BaseModel):
    """The durable on-disk outbox."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="SQLite file; default <state_dir>/outbox.sqlite")
    budget_bytes: int = Field(
        default=2 * 1024**3, ge=1024 * 1024,
        description="Disk budget; when reached the agent stops acknowledging upstream (back-pressure) and alarms",
    )
    fsync: bool = Field(default=True, description="fsync each commit (survives power loss, not just a crash)")
    group_commit_ms: float = Field(default=10.0, ge=0, description="Collect ingests this long into one transaction")


class HttpConfig(BaseModel):
    """The agent's local HTTP endpoint: health, Prometheus metrics, local job assignment."""

    model_config = ConfigDict(extra="forbid")

    host: Literal["127.0.0.1", "::1", "localhost"] = Field(default="127.0.0.1", description="Loopback only")
    port: int = Field(default=9464, ge=0, le=65535, description="Port; 0 = pick a free one")


class ServerLink(BaseModel):
    """The central amtrace server, when there is one."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the server")
    token_env: str = Field(default="AMTRACE_AGENT_TOKEN", description="Environment variable holding the agent token")
    interval_s: float = Field(default=2.0, gt=0, le=300, description="Heartbeat and job-context period")


class AgentConfig(BaseModel):
    """The edge agent's own settings (e.g. configs/agent.yaml)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-_]*$", description="Agent id, used in client ids and logs")
    machines_dir: str = Field(default="configs/machines", description="Folder of machine YAML files")
    machines: list[str] | None = Field(default=None, description="Machine ids to run; absent = every file in machines_dir")
    state_dir: str = Field(default="var/edge", description="Folder for the outbox, quarantine and assignments")
    influx: InfluxConfig = Field(default_factory=InfluxConfig, description="InfluxDB target")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable outbox")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Local HTTP endpoint")
    server: ServerLink | None = Field(default=None, description="Central server; absent = local assignments only")
    approvals_file: str | None = Field(default=None, description="Local approvals (until the server is reachable)")
    log_json: bool = Field(default=False, description="One JSON object per log line")


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        lines.append(f"  - {loc or '<file>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_machine(path: str | Path) -> MachineConfig:
    """Load and validate one machine file; raise ConfigError naming file and field."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        machine = MachineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from e
    if machine.id != path.stem:
        raise ConfigError(f"{path}: id: machine id '{machine.id}' must match the file name '{path.stem}'")
    return machine


def load_machines(folder: str | Path, only: list[str] | None = None) -> list[MachineConfig]:
    """Load every *.yaml in folder (or only the listed ids); refuse all if any one is invalid."""
    folder = Path(folder)
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if only is not None:
        wanted = set(only)
        files = [f for f in files if f.stem in wanted]
        missing = wanted - {f.stem for f in files}
        if missing:
            raise ConfigError(f"{folder}: no machine file for {', '.join(sorted(missing))}")
    if not files:
        raise ConfigError(f"{folder}: no machine configuration files (*.yaml)")
    problems, machines = [], []
    for f in files:
        try:
            machines.append(load_machine(f))
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))
    return machines


def load_agent(path: str | Path) -> AgentConfig:
    """Load and validate the agent's configuration file."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from e
