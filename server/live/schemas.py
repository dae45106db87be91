"""Shapes of live machine state: what an agent's heartbeat carries and what dashboards receive."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# building: a printer at work; active: any other machine at work (its own word is the phase: heating, washing …)
MachineState = Literal["building", "active", "idle", "offline", "unknown"]
SILENT_AFTER_S = 30.0  # "no data for N s" once a connected machine's last reading is older than this


class LiveAlert(BaseModel):
    """An alert the agent raised for a machine: active while its cause lasts, cleared with the time it ended, or a
    one-off event."""

    model_config = ConfigDict(extra="ignore")

    severity: Literal["info", "warning", "alarm"] = Field(description="How serious the alert is")
    message: str = Field(max_length=2000, description="What happened, in words")
    ts_ns: int = Field(ge=0, description="When the latest event of it happened, nanoseconds since the epoch")
    kind: str | None = Field(default=None, max_length=64, description="The agent's event kind, e.g. excursion")
    key: str | None = Field(default=None, max_length=200, description="Its cause, e.g. excursion:chamber_o2; none "
                                                                      "for a one-off event")
    state: Literal["active", "cleared", "event"] = Field(default="active", description="active while the cause "
                                                         "lasts; cleared once it ended; event: a one-off")
    since_ns: int | None = Field(default=None, ge=0, description="When the cause began")
    cleared_ns: int | None = Field(default=None, ge=0, description="When the cause ended")
    cleared_by: str | None = Field(default=None, max_length=2000, description="The event that ended it")


class LiveTrend(BaseModel):
    """The last 30 minutes of one key signal, one [minute start (s), min, max, last] per minute."""

    model_config = ConfigDict(extra="ignore")

    signal: str = Field(max_length=100)
    unit: str = Field(max_length=50)
    limits: dict[str, float] = Field(default_factory=dict, description="warn_low, warn_high, alarm_low, alarm_high")
    points: list[tuple[int, float, float, float]] = Field(default_factory=list, max_length=60)


class LiveMachineReport(BaseModel):
    """One machine's state as the agent reports it in heartbeat status.machines.<id>."""

    model_config = ConfigDict(extra="ignore")

    connected: bool = Field(description="The agent is connected to the machine")
    state: MachineState = Field(description="building (a printer), active (another machine at work), idle, "
                                            "offline or unknown")
    phase: str | None = Field(default=None, max_length=64, description="The machine's own state word: printing, "
                                                                        "heating, holding, washing, prevacuum …")
    kind: str | None = Field(default=None, max_length=64, description="Machine kind, e.g. furnace")
    job: str | None = Field(default=None, description="Job on the machine, e.g. JOB-1 or 1")
    layer: int | None = Field(default=None, ge=0, description="Current layer of a printer")
    layers_total: int | None = Field(default=None, ge=0, description="Layers in the build")
    software_revision: str | None = Field(default=None, description="Control software revision read now")
    alerts: list[LiveAlert] = Field(default_factory=list, max_length=100, description="Active alerts, then the "
                                                                                       "last 30 min's cleared ones")
    trends: list[LiveTrend] | None = Field(default=None, max_length=8, description="Key signals' last 30 min; "
                                           "absent: the server keeps the last trends it got")
    last_data_ns: int | None = Field(default=None, ge=0, description="The machine's last reading; none: no data "
                                                                      "since the agent started")
    updated_ns: int = Field(ge=0, description="When the agent took this state, ns since the epoch")


class LiveMachine(LiveMachineReport):
    """A machine's live state as the server holds it."""

    machine_id: str
    agent: str = Field(description="Name of the agent that reported it")
    received_at: str = Field(description="Server time the heartbeat arrived (ISO 8601, UTC)")
    progress_pct: float | None = Field(default=None, description="layer / layers_total × 100 when both are known")
    stale: bool = Field(default=False, description="No heartbeat for longer than the offline limit")
    silent_s: float | None = Field(default=None, description="Seconds since the machine's last reading, when that "
                                                             f"is more than {SILENT_AFTER_S:g} s (or no reading yet)")
