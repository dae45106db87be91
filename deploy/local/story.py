"""The demo's story, told through the real parts: the printer builds once the release gate lets it, then one load
of devices goes through heat treatment (furnace-01), cleaning (washer-01) and steam sterilization (sterilizer-01),
each a recorded cycle judged on the data the machine sent through the agent into InfluxDB, then inspection and
release; at release the devices' records are sealed and `amtrace-server dhr verify` confirms them.

The three post-processing machines are MQTT machines this module plays itself (one thread each, 1 message/s with
the machine's own timestamps, idle between cycles), so each cycle starts when the story loads the machine. Their
programs are time-compressed for a demo (a 1-minute furnace hold instead of 2 hours) and judged by recipes that
say so in their names; the steam cycle keeps its real 3.5-minute plateau at 134 °C and is judged by the real
recipe (EN 285 band, F0, saturated steam). `Tempo` holds both; the test tempo compresses further.

Run by `deploy/local/stack.py` in the background; progress goes to its log and var/demo/story.json."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from edge.config import MachineConfig  # noqa: E402
from edge.simulators.mqtt import messages_for  # noqa: E402
from edge.simulators.profiles import FurnaceCycle, SterilizerCycle, WasherCycle  # noqa: E402

STEAM_134 = {"process": "steam", "sterilization_temp_c": 134.0, "band_minus_k": 0.0, "band_plus_k": 3.0,
             "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0, "max_gap_s": 5.0}


@dataclass
class Tempo:
    """Machine programs and the recipes that judge them."""

    furnace: FurnaceCycle
    washer: WasherCycle
    sterilizer: SterilizerCycle
    heat_treatment: dict
    cleaning: dict
    steam: dict
    residues: list[dict] = field(default_factory=list)

    def windows(self) -> dict[str, tuple[float, float]]:
        """Per machine: (program time where the cycle starts, where it ends) — from loading to unloading."""
        def span(profile, first: str, last: str) -> tuple[float, float]:
            t, start, end = 0.0, None, None
            for name, d in profile.phases():
                if name == first and start is None:
                    start = t
                t += d
                if name == last:
                    end = t
            return start, end
        return {"furnace": span(self.furnace, "pump_down", "argon_cool"),
                "washer": span(self.washer, "fill", "dry"),
                "sterilizer": span(self.sterilizer, "prevacuum_down", "aeration")}


# The demo: about 15 minutes from the gate's decision to the sealed record.
DEMO = Tempo(
    furnace=FurnaceCycle(hold_s=60.0, ramp_k_per_min=400.0, cool_tau_s=25.0, pump_down_s=30.0, zone_lag_s=5.0,
                         load_lag_s=15.0, program="DEMO-SR-800C-1MIN"),
    washer=WasherCycle(wash_s=60.0, fill_s=10.0, heat_s=40.0, rinse_s=20.0, final_rinse_s=40.0, dry_s=30.0,
                       program="DEMO-TI-IMPLANT-55C"),
    sterilizer=SterilizerCycle(pulse_down_s=30.0, pulse_up_s=20.0, heat_up_s=60.0, exhaust_s=30.0, drying_s=30.0,
                               aeration_s=20.0),
    heat_treatment={"process": "heat_treatment", "hold_temp_c": 800.0, "hold_band_k": 10.0, "min_hold_s": 45.0,
                    "max_ramp_k_per_min": 450.0, "rate_window_s": 10.0, "atmosphere_max": 20.0,
                    "max_cooling_k_per_min": 2000.0, "max_unload_temp_c": 250.0, "max_gap_s": 5.0},
    cleaning={"process": "cleaning", "wash_temperature_c": [50.0, 60.0], "min_wash_s": 50.0,
              "max_final_conductivity_us_cm": 5.0, "max_gap_s": 5.0,
              "residue_limits": [{"test": "protein_ug_cm2", "max": 6.4, "unit": "µg/cm²"}]},
    steam=STEAM_134,
    residues=[{"test": "protein_ug_cm2", "value": 1.1, "unit": "µg/cm²"}],
)

# Tests: the same story in about a minute of machine time (recipes and programs compressed further, steam included).
QUICK = Tempo(
    furnace=FurnaceCycle(hold_s=5.0, ramp_k_per_min=6000.0, cool_tau_s=2.0, pump_down_s=2.0, zone_lag_s=0.5,
                         load_lag_s=1.0, program="TEST-SR-800C"),
    washer=WasherCycle(wash_s=6.0, fill_s=1.0, heat_s=3.0, rinse_s=2.0, final_rinse_s=6.0, dry_s=2.0,
                       final_rinse_tau_s=1.5, program="TEST-WASH"),
    sterilizer=SterilizerCycle(plateau_s=9.0, pulses=1, pulse_down_s=3.0, pulse_up_s=3.0, heat_up_s=4.0,
                               exhaust_s=3.0, drying_s=3.0, aeration_s=2.0, program="TEST-134C"),
    heat_treatment={"process": "heat_treatment", "hold_temp_c": 800.0, "hold_band_k": 10.0, "min_hold_s": 2.0,
                    "max_ramp_k_per_min": 7000.0, "rate_window_s": 2.0, "atmosphere_max": 20.0,
                    "max_cooling_k_per_min": 40000.0, "max_unload_temp_c": 600.0, "max_gap_s": 5.0},
    cleaning={"process": "cleaning", "wash_temperature_c": [50.0, 60.0], "min_wash_s": 4.0,
              "max_final_conductivity_us_cm": 5.0, "max_gap_s": 5.0, "residue_limits": []},
    steam={**STEAM_134, "min_hold_s": 5.0, "min_f0_min": 2.0},
)


def utc(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


class PlayedMachine(threading.Thread):
    """An MQTT machine played by the story: idle messages once a second, a program when the story loads it."""

    def __init__(self, machine: MachineConfig, profile, window: tuple[float, float], port: int):
        import paho.mqtt.client as mqtt

        super().__init__(daemon=True, name=f"play-{machine.id}")
        self.machine, self.profile, self.window = machine, profile, window
        machine.__dict__["_sim_profile"] = profile  # messages_for reads the profile from here
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"story-{machine.id}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.rng = random.Random(machine.id)
        self.seq = 0
        self.started = threading.Event()
        self.ended = threading.Event()
        self._go = threading.Event()
        self._stop = threading.Event()
        self.cycle_start: float | None = None
        self.cycle_end: float | None = None

    def run_cycle(self) -> None:
        """Load the machine: its program runs from now."""
        self.ended.clear()
        self._go.set()

    def stop(self) -> None:
        """Stop publishing."""
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()

    def _publish(self, t: float) -> None:
        self.seq += 1
        for topic, payload in messages_for(self.machine, t, self.rng, ts_ms=time.time_ns() // 1_000_000, seq=self.seq):
            self.client.publish(topic, payload, qos=1)

    def run(self) -> None:
        begin, end = self.window
        tick = time.monotonic()
        while not self._stop.is_set():
            if self._go.is_set():
                self._go.clear()
                self.cycle_start = time.time()
                self.started.set()
                t0 = time.monotonic()
                while not self._stop.is_set():
                    t = begin + (time.monotonic() - t0)
                    if t > end:
                        break
                    self._publish(t)
                    tick += 1.0
                    time.sleep(max(0.0, tick - time.monotonic()))
                self.cycle_end = time.time()
                self.ended.set()
            self._publish(1.0)  # idle, before the program
            tick = max(tick + 1.0, time.monotonic())
            time.sleep(max(0.0, tick - time.monotonic()))


class Story:
    """The walk, as the people of the plant do it through the API (seed_demo.Api logins)."""

    def __init__(self, api, *, say=print, state_file: Path | None = None):
        self.api, self.say, self.state_file = api, say, state_file
        self.state: dict = {"steps": []}

    def note(self, text: str, **kw) -> None:
        """Say a step and keep it in the state file."""
        self.say(f"[story] {text}")
        self.state["steps"].append({"at": utc(time.time()), "text": text})
        self.state.update(kw)
        if self.state_file is not None:
            self.state_file.write_text(json.dumps(self.state, indent=1))

    def wait(self, what: str, check, timeout: float, every: float = 1.0):
        """Poll check() until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    def steps(self, code: str) -> dict:
        """The device's stage steps by stage."""
        return {s["stage"]: s for s in self.api.call("otto.operator", "GET", f"/devices/{code}/stages")}

    def stage(self, codes: list[str], stage: str, *, performer: str, acceptor: str, result: str,
              before_complete=None) -> None:
        """Start, complete (performer's signature) and accept (a second person's signature) one stage."""
        pw = self.api.password
        for code in codes:
            self.api.call(performer, "POST", f"/stages/steps/{self.steps(code)[stage]['id']}/start")
        if before_complete is not None:
            before_complete()
        for code in codes:
            step = self.steps(code)[stage]
            self.api.call(performer, "POST", f"/stages/steps/{step['id']}/complete",
                          json={"result": result, "password": pw})
            self.api.call(acceptor, "POST", f"/stages/steps/{step['id']}/accept",
                          json={"judgement": "complete and conforming", "password": pw})
        self.note(f"{stage.replace('_', ' ')}: performed by {performer}, accepted by {acceptor}")

    def recipe(self, name: str, parameters: dict) -> int:
        """A recipe version the quality engineer writes and approves (signature)."""
        r = self.api.call("quentin.quality", "POST", "/cycles/recipes", json={"name": name, "parameters": parameters})
        self.api.call("quentin.quality", "POST", f"/cycles/recipes/{r['id']}/approve",
                      json={"password": self.api.password})
        return r["id"]

    def cycle(self, machine: PlayedMachine, recipe_id: int, codes: list[str], residues: list[dict]) -> dict:
        """Load the machine, record the cycle's start, let the program run, record its end; the server judges it."""
        machine.run_cycle()
        machine.started.wait(10)
        c = self.api.call("otto.operator", "POST", "/cycles", json={
            "machine_id": machine.machine.id, "recipe_id": recipe_id, "device_codes": codes,
            "started_at": utc(machine.cycle_start)})
        self.note(f"{machine.machine.id}: cycle {c['id']} running on {len(codes)} device(s)")
        begin, end = machine.window
        machine.ended.wait(end - begin + 60)

        def complete():
            r = self.api.request("otto.operator", "POST", f"/cycles/{c['id']}/complete", json={
                "password": self.api.password, "ended_at": utc(machine.cycle_end), "residue_results": residues})
            if r.status_code == 409 and r.json().get("code") == "cycle_data_pending":
                return None  # the agent still holds some of the cycle's readings: they come
            if r.status_code >= 400:
                raise RuntimeError(f"completing cycle {c['id']}: {r.status_code} {r.text}")
            return r.json()
        out = self.wait(f"cycle {c['id']}'s readings to be stored", complete, 120, every=2)
        failed = [k["name"] for k in out["criteria"] if not k["passed"]]
        self.note(f"{machine.machine.id}: cycle {c['id']} {out['verdict'].upper()}"
                  + (f" (failed: {', '.join(failed)})" if failed else f" ({len(out['criteria'])} criteria met)"))
        if out["verdict"] != "pass":
            raise RuntimeError(f"cycle {c['id']} on {machine.machine.id} failed: {out['criteria']}")
        return out

    def disposition_open_ncs(self, job: dict) -> None:
        """What the build raised (an O2 excursion …) is reviewed and dispositioned by quality engineering."""
        for nc in self.api.call("quentin.quality", "GET", "/nonconformities"):
            if nc["state"] == "open" and (nc["job_id"] == job["id"] or nc["machine_id"] == job["machine_id"]):
                self.api.call("quentin.quality", "POST", f"/nonconformities/{nc['id']}/disposition", json={
                    "disposition": "use_as_is", "password": self.api.password,
                    "rationale": "demo review: excursion within the validated margin; CT inspection conforming"})
                self.note(f"nonconformity {nc['id']} ({nc['kind']}) dispositioned use as is")

    def run(self, *, job: dict, codes: list[str], played: dict[str, PlayedMachine], tempo: Tempo,
            build_timeout: float = 600) -> None:
        """From the gate's decision to the sealed records."""
        job_id = job["id"]

        def build_done():
            live = self.api.call("paula.manager", "GET", "/live/machines").get(job["machine_id"]) or {}
            total = live.get("layers_total")
            return total and live.get("layer") == total and (live.get("phase") or "").lower() == "completed"
        self.wait(f"the build of job {job_id} to finish", build_done, build_timeout, every=2)
        self.note(f"job {job_id}: build finished on {job['machine_id']}")
        self.disposition_open_ncs(job)
        self.stage(codes, "build", performer="otto.operator", acceptor="paula.manager", result="build complete")
        ht = self.recipe(f"Stress relief 800 °C, {tempo.furnace.hold_s:g} s hold (time-compressed demo program)",
                         tempo.heat_treatment)
        self.stage(codes, "post_processing", performer="otto.operator", acceptor="paula.manager",
                   result="stress relieved", before_complete=lambda: self.cycle(played["furnace"], ht, codes, []))
        wash = self.recipe(f"Ultrasonic cleaning 55 °C, {tempo.washer.wash_s:g} s wash (time-compressed demo program)",
                           tempo.cleaning)
        self.stage(codes, "cleaning", performer="otto.operator", acceptor="quentin.quality", result="cleaned",
                   before_complete=lambda: self.cycle(played["washer"], wash, codes, tempo.residues))
        steam = self.recipe(f"Steam 134 °C, {tempo.steam['min_hold_s']:g} s hold", tempo.steam)
        self.stage(codes, "sterilization", performer="otto.operator", acceptor="quentin.quality",
                   result="sterilized", before_complete=lambda: self.cycle(played["sterilizer"], steam, codes, []))
        self.stage(codes, "inspection", performer="quentin.quality", acceptor="rita.reviewer",
                   result="dimensions and surface conforming")
        self.stage(codes, "release", performer="quentin.quality", acceptor="rita.reviewer", result="released")
        seals = {c: self.api.call("quentin.quality", "GET", f"/history/devices/{c}/seal") for c in codes}
        self.note("released and sealed: " + ", ".join(f"{c} ({'intact' if s.get('intact') else s})"
                                                       for c, s in seals.items()), released=codes, seals=seals)


def main() -> int:
    """`python deploy/local/story.py` (started by stack.py): the story on the running demo stack."""
    import os
    import shlex
    import signal
    import subprocess

    from edge.config import load_machine
    from seed_demo import Api, PEOPLE
    from stack import BIN, DEMO_PASSWORD, QUICK as quick, ROOT, STATE, VAR

    tempo = QUICK if quick else DEMO
    stack = json.loads(STATE.read_text())
    api = Api(f"http://127.0.0.1:{stack['ports']['server']}", DEMO_PASSWORD)
    for username in PEOPLE:
        api.login(username)
    story = Story(api, state_file=VAR / "story.json")
    machines = {p.stem: p for p in (VAR / "machines").glob("*.yaml")}
    played = {}
    for key, machine_id, profile in (("furnace", "furnace-01", tempo.furnace), ("washer", "washer-01", tempo.washer),
                                     ("sterilizer", "sterilizer-01", tempo.sterilizer)):
        m = load_machine(machines[machine_id])
        played[key] = PlayedMachine(m, profile, tempo.windows()[key], stack["ports"]["mosquitto"])
        played[key].start()
    try:
        story.note(f"waiting for the printer to build job {stack['job']['id']} (it starts once the gate allows it)")
        story.run(job=stack["job"], codes=stack["devices"], played=played, tempo=tempo)
        env = dict(shlex.split(line)[0].split("=", 1) for line in (VAR / "server-cli.env").read_text().splitlines())
        for argv in (["audit", "verify"], ["dhr", "verify", stack["devices"][0]]):
            r = subprocess.run([str(BIN / "amtrace-server"), *argv], cwd=ROOT, env={**os.environ, **env},
                               capture_output=True, text=True)
            story.note(f"amtrace-server {' '.join(argv)}: exit {r.returncode}: "
                       + (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1][:300],
                       **{"verify_" + argv[0]: r.returncode})
        story.note("the story is told: see the DHR of " + stack["devices"][0], done=True)
        code = 0
    except Exception as e:  # noqa: BLE001 - said in the story's log and state, for the person at the demo
        story.note(f"the story stopped: {type(e).__name__}: {e}", failed=str(e))
        code = 1
    # The three machines stay on, idle, until `make stop`: a dashboard shows them as they are.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for p in played.values():
        p.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
