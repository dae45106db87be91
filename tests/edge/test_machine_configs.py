"""Every shipped machine file loads; broken machine files are refused naming the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from edge.config import ConfigError, MachineConfig, load_machine, load_machines

ROOT = Path(__file__).resolve().parents[2]
MACHINES_DIR = ROOT / "configs" / "machines"
MACHINE_FILES = sorted(MACHINES_DIR.glob("*.yaml")) + sorted(MACHINES_DIR.glob("*.yml"))
MQTT_SAMPLES = ["sla-01", "furnace-01", "washer-01", "sterilizer-01"]


def test_the_samples_are_there():
    """The four MQTT samples ship (the OPC UA ones come from their own engineer)."""
    stems = {f.stem for f in MACHINE_FILES}
    assert set(MQTT_SAMPLES) <= stems


@pytest.mark.parametrize("path", MACHINE_FILES, ids=lambda p: p.name)
def test_every_machine_file_loads(path):
    """Each file in configs/machines/ is valid and its id is its file name."""
    machine = load_machine(path)
    assert isinstance(machine, MachineConfig)
    assert machine.id == path.stem
    assert machine.id == machine.id.lower()
    for s in machine.signals:
        assert s.description, f"{path.name}: signal {s.name} has no description"


def test_the_folder_loads_as_a_whole():
    """load_machines() takes the whole folder at once (what the agent does at start)."""
    machines = load_machines(MACHINES_DIR)
    assert [m.id for m in machines] == sorted(m.id for m in machines)
    assert {m.id for m in machines} >= set(MQTT_SAMPLES)


@pytest.mark.parametrize("machine_id", MQTT_SAMPLES)
def test_mqtt_samples_carry_live_limits(machine_id):
    """Each MQTT sample has live limits on at least one signal that is worth an alarm."""
    machine = load_machine(MACHINES_DIR / f"{machine_id}.yaml")
    assert machine.connection.type == "mqtt"
    assert any(s.limits is not None and s.limits.alarm_high is not None for s in machine.signals)


def _washer() -> dict:
    return yaml.safe_load((MACHINES_DIR / "washer-01.yaml").read_text())


def _signal(d: dict, name: str) -> dict:
    return next(s for s in d["signals"] if s["name"] == name)


# (case, change to the washer sample, file name, the exact problem line after the file name)
INVALID = [
    ("unknown top-level key", lambda d: d.update(colour="red"), "washer-01",
     "  - colour: Extra inputs are not permitted (got 'red')"),
    ("id differs from file name", lambda d: d.update(id="washer-02"), "washer-01",
     "id: machine id 'washer-02' must match the file name 'washer-01'"),
    ("uppercase id", lambda d: d.update(id="Washer-01"), "Washer-01",
     "  - id: String should match pattern '^[a-z0-9][a-z0-9\\-_]*$' (got 'Washer-01')"),
    ("port out of range", lambda d: d["connection"].update(port=70000), "washer-01",
     "  - connection.mqtt.port: Input should be less than or equal to 65535 (got 70000)"),
    ("no topic", lambda d: d["connection"].pop("topic"), "washer-01",
     "  - connection.mqtt.topic: Field required"),
    ("protocol as a number", lambda d: d["connection"].update(protocol=5), "washer-01",
     "  - connection.mqtt.protocol: Input should be '5' or '3.1.1' (got 5)"),
    ("QoS 0 would lose data", lambda d: d["connection"].update(qos=0), "washer-01",
     "  - connection.mqtt.qos: Input should be 1 (got 0)"),
    ("empty path element", lambda d: _signal(d, "bath_temp_c")["source"].update(path="bath..temp_c"), "washer-01",
     "  - signals.4.source.mqtt.path: String should match pattern '^[A-Za-z0-9_\\-]+(\\.[A-Za-z0-9_\\-]+)*$' "
     "(got 'bath..temp_c')"),
    ("unknown source key", lambda d: _signal(d, "bath_temp_c")["source"].update(jsonpath="$.bath"), "washer-01",
     "  - signals.4.source.mqtt.jsonpath: Extra inputs are not permitted (got '$.bath')"),
    ("limits on a bool", lambda d: _signal(d, "bath_level_ok").update(limits={"warn_high": 1}), "washer-01",
     "  - signals.8: Value error, limits are only allowed on numeric signals, not on type 'bool'"),
    ("alarm inside warning band", lambda d: _signal(d, "bath_temp_c").update(limits={"warn_high": 70, "alarm_high": 65}),
     "washer-01", "  - signals.4.limits: Value error, alarm_high must not be below warn_high"),
    ("unknown value type", lambda d: _signal(d, "bath_temp_c").update(type="double"), "washer-01",
     "  - signals.4.type: Input should be 'float', 'int', 'bool' or 'str' (got 'double')"),
    ("signal name twice", lambda d: _signal(d, "step").update(name="program"), "washer-01",
     "  - <file>: Value error, signal name 'program' is used twice"),
    # A source is read in the connection's protocol, so an OPC UA key on an MQTT machine is named as such.
    ("OPC UA source on an MQTT machine", lambda d: _signal(d, "bath_temp_c").update(source={"node_id": "ns=2;s=T"}),
     "washer-01", "  - signals.4.source.mqtt.node_id: Extra inputs are not permitted (got 'ns=2;s=T')"),
    ("source says another protocol",
     lambda d: _signal(d, "bath_temp_c").update(source={"type": "opcua", "node_id": "ns=2;s=T"}),
     "washer-01", "  - <file>: Value error, signal 'bath_temp_c' has a opcua source but the connection type is 'mqtt'"),
    ("unknown protocol", lambda d: d["connection"].update(type="profinet"), "washer-01",
     "  - <file>: Value error, connection.type 'profinet' is not a known protocol (known: mqtt, opcua, modbus, folder)"),
    ("two signals, one InfluxDB field", lambda d: _signal(d, "ultrasonic_power_w").update(field="bath_temp_c"),
     "washer-01", "  - <file>: Value error, signals 'bath_temp_c' and 'ultrasonic_power_w' both write cleaning.bath_temp_c"),
    ("no signals", lambda d: d.update(signals=[]), "washer-01",
     "  - signals: List should have at least 1 item after validation, not 0"),
]


@pytest.mark.parametrize("case,change,stem,problem", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_machine_file_is_refused_naming_file_and_field(tmp_path, case, change, stem, problem):
    """A broken file is refused; the message starts with the file and names the field."""
    data = copy.deepcopy(_washer())
    change(data)
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_machine(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message.splitlines() or message == f"{path}: {problem}"


def test_a_typo_in_an_opc_ua_source_is_named_in_opc_ua_terms(tmp_path):
    """The source is read in the connection's protocol: a misspelt OPC UA key is not reported as a missing MQTT path."""
    data = yaml.safe_load((MACHINES_DIR / "furnace-02.yaml").read_text())
    _signal(data, "setpoint")["source"] = {"nodeid": "ns=2;s=T"}
    path = tmp_path / "furnace-02.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_machine(path)
    lines = str(caught.value).splitlines()
    assert "  - signals.2.source.opcua.nodeid: Extra inputs are not permitted (got 'ns=2;s=T')" in lines
    assert not any("mqtt" in line for line in lines)


def test_not_yaml_is_refused_with_line_and_column(tmp_path):
    """A YAML syntax error names file, line and column."""
    path = tmp_path / "washer-01.yaml"
    path.write_text("id: washer-01\n  kind: [x\n")
    with pytest.raises(ConfigError) as caught:
        load_machine(path)
    assert str(caught.value) == f"{path}: not valid YAML at line 2, column 7: mapping values are not allowed here"


def test_one_bad_file_refuses_the_folder_and_names_it(tmp_path):
    """The agent does not start half its machines: one broken file refuses the folder, by name."""
    for stem in MQTT_SAMPLES:
        (tmp_path / f"{stem}.yaml").write_text((MACHINES_DIR / f"{stem}.yaml").read_text())
    broken = _washer()
    broken["connection"]["port"] = 0
    (tmp_path / "washer-01.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError) as caught:
        load_machines(tmp_path)
    assert str(caught.value).splitlines() == [
        f"{tmp_path / 'washer-01.yaml'}: invalid configuration (1 problem)",
        "  - connection.mqtt.port: Input should be greater than or equal to 1 (got 0)",
    ]
