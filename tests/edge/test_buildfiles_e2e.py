"""The agent end to end with a watched build-file folder: a matching file clears the start, a
tampered or unapproved file blocks it, and the interlock command reaches the machine."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import trimesh
import yaml

from agentkit import AgentProcess, machine_yaml, wait_until, write_agent
from edge.validation.hashing import sha256_file
from edge.validation.verify import geometry_fingerprint_file


class CommandListener:
    """Subscribes to the machine's command topic like the machine's controller would."""

    def __init__(self, port: int, topic: str):
        self.commands: list[dict] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-machine-controller")
        self.client.on_message = lambda c, u, msg: self._got(msg.payload)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _got(self, payload: bytes) -> None:
        with self._lock:
            self.commands.append(json.loads(payload))

    def values(self) -> list[bool]:
        """The decisions sent for build-file checks (not the agent's decision re-published at (re)connection)."""
        with self._lock:
            return [c["value"] for c in self.commands if not c["reason"].startswith("(re)connection")]

    def at_connection(self) -> list[dict]:
        """The decisions re-published when the agent (re)connected: retained, for a machine that restarts."""
        with self._lock:
            return [c for c in self.commands if c["reason"].startswith("(re)connection")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_watched_folder_clears_matching_files_and_blocks_tampered_ones(tmp_path, mosquitto, influxdb):
    influxdb.create_database("e2e_build")
    design = tmp_path / "design" / "implant-v3.stl"
    design.parent.mkdir()
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=12.0)
    mesh.apply_translation([60, 60, 20])
    mesh.export(design)
    tampered_mesh = mesh.copy()
    vertices = tampered_mesh.vertices.copy()
    outward = (vertices[0] - [60, 60, 20]) / np.linalg.norm(vertices[0] - [60, 60, 20])
    vertices[0] += 0.05 * outward  # 50 µm outwards: invisible to the eye, not the approved implant
    tampered_mesh.vertices = vertices

    machine = machine_yaml("printer-t1", mosquitto.port)
    machine["kind"] = "sla_printer"
    machine["connection"]["command_topic"] = "amtrace/test/printer-t1/command"
    machine["build_volume"] = {"x_mm": 145, "y_mm": 145, "z_mm": 175}
    drop = tmp_path / "drop"
    machine["build_files"] = {"folder": str(drop)}
    cfg = write_agent(tmp_path, machines=[machine], influx_url=influxdb.url, database="e2e_build")
    approvals = tmp_path / "approvals.yaml"
    approvals.write_text(yaml.safe_dump([{
        "machine_id": "printer-t1", "job_id": "JOB-7",
        "files": [{"file_name": design.name, "sha256": sha256_file(design),
                   "geometry_fingerprint": geometry_fingerprint_file(design),
                   "design_iteration": "CASE-12/it-3", "device_codes": ["DEV-7"],
                   "design_file": str(design)}],
    }]))
    data = yaml.safe_load(cfg.read_text())
    data["approvals_file"] = str(approvals)
    cfg.write_text(yaml.safe_dump(data))

    listener = CommandListener(mosquitto.port, "amtrace/test/printer-t1/command")
    agent = AgentProcess(cfg).start()
    try:
        # 1. no job on the machine yet: any file is blocked
        shutil.copy(design, drop / "early.stl")
        checks = wait_until(lambda: agent.status()["build_file_checks"], 30, "the first check")
        assert checks[0]["allowed"] is False and checks[0]["verdict"] == "no_job"
        wait_until(lambda: listener.values() == [False], 30, "a block command")
        assert listener.at_connection()[0]["value"] is False  # blocked from the moment the agent connected

        agent.api("PUT", "/machines/printer-t1/assignment", {"job": "JOB-7", "devices": ["DEV-7"]})
        # 2. the approved file, byte-identical: cleared, start enabled
        shutil.copy(design, drop / "job7.stl")
        checks = wait_until(lambda: (c := agent.status()["build_file_checks"]) and len(c) == 2 and c, 30, "check 2")
        assert checks[1]["verdict"] == "identical" and checks[1]["allowed"] is True
        assert checks[1]["design_iteration"] == "CASE-12/it-3"
        wait_until(lambda: listener.values() == [False, True], 30, "an enable command")

        # 3. tampered geometry: blocked, with the deviation in words
        tampered_mesh.export(drop / "job7-edited.stl")
        checks = wait_until(lambda: (c := agent.status()["build_file_checks"]) and len(c) == 3 and c, 60, "check 3")
        assert checks[2]["verdict"] == "different" and checks[2]["allowed"] is False
        deviation = [r for r in checks[2]["reasons"] if r.startswith("received file deviates by up to")]
        assert 0.04 <= float(deviation[0].split()[6]) <= 0.051, deviation  # the 50 µm, located and in words
        wait_until(lambda: listener.values() == [False, True, False], 30, "a second block command")
        assert listener.commands[-1]["command"] == "start_enabled"
        assert "job7-edited.stl" in listener.commands[-1]["reason"]

        # every check is an event point under the job's device code
        def events():
            res = influxdb.query("SELECT verdict, allowed, message FROM amtrace_events WHERE kind='build_file_check' "
                                 "AND device='DEV-7' ORDER BY time", db="e2e_build")
            series = res["results"][0].get("series")
            return series and series[0]["values"]
        rows = wait_until(lambda: (r := events()) and len(r) == 2 and r, 30, "two check events under DEV-7")
        assert [r[1:3] for r in rows] == [["identical", True], ["different", False]]
        assert "BUILD BLOCKED" in rows[1][3]
    finally:
        agent.stop()
        listener.close()


def test_build_files_carried_or_announced_on_mqtt_are_checked(tmp_path, mosquitto, influxdb):
    import base64

    influxdb.create_database("e2e_build_mqtt")
    design = tmp_path / "guide-v1.stl"
    mesh = trimesh.creation.box(extents=(30, 20, 8))
    mesh.apply_translation([40, 40, 4])
    mesh.export(design)
    other = tmp_path / "guide-v1-edited.stl"
    edited = mesh.copy()
    edited.apply_scale(1.001)
    edited.export(other)

    machine = machine_yaml("printer-t2", mosquitto.port)
    machine["kind"] = "sla_printer"
    machine["connection"]["command_topic"] = "amtrace/test/printer-t2/command"
    machine["build_files"] = {"mqtt_topic": "amtrace/test/printer-t2/buildfile"}
    cfg = write_agent(tmp_path, machines=[machine], influx_url=influxdb.url, database="e2e_build_mqtt")
    approvals = tmp_path / "approvals.json"
    approvals.write_text(json.dumps([{
        "machine_id": "printer-t2", "job_id": "JOB-8",
        "files": [{"file_name": design.name, "sha256": sha256_file(design), "design_iteration": "CASE-3/it-1"}]}]))
    data = yaml.safe_load(cfg.read_text())
    data["approvals_file"] = str(approvals)
    cfg.write_text(yaml.safe_dump(data))

    agent = AgentProcess(cfg).start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-build-prep")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        agent.api("PUT", "/machines/printer-t2/assignment", {"job": "JOB-8", "devices": ["DEV-8"]})
        time.sleep(1.0)  # the guard's MQTT session subscribes

        def send(doc) -> None:
            pub.publish("amtrace/test/printer-t2/buildfile", json.dumps(doc) if isinstance(doc, dict) else doc,
                        qos=1).wait_for_publish(10)

        def checks(n):
            return wait_until(lambda: (c := agent.status()["build_file_checks"]) and len(c) == n and c, 60, f"check {n}")

        send({"file_name": "guide.stl", "content_base64": base64.b64encode(design.read_bytes()).decode()})
        c = checks(1)[0]
        assert (c["verdict"], c["allowed"], c["design_iteration"]) == ("identical", True, "CASE-3/it-1")
        send({"path": str(other)})
        c = checks(2)[1]
        assert (c["verdict"], c["allowed"], c["file"]) == ("different", False, str(other))
        send({"file_name": "../../etc/passwd", "content_base64": "!!"})
        entries = wait_until(lambda: agent.api("GET", "/quarantine"), 30, "a quarantined build-file message")
        assert entries[0]["source"] == "buildfile"
        assert entries[0]["reason"].startswith("build-file message refused: ")
    finally:
        pub.loop_stop()
        pub.disconnect()
        agent.stop()
