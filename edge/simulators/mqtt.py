"""Simulated MQTT machines: publish realistic snapshots of each MQTT machine in configs/machines/.

Messages are built from the machine's own signal map, so what the simulator sends is exactly what
the connector expects (paths, types, topics). Physics: edge/simulators/profiles.py.

    python -m edge.simulators.mqtt --port 1883 --rate 2 --speed 60 --duration 120
    amtrace-edge simulate mqtt ...        (same options, once the agent's CLI wires it)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from edge.config import ConfigError, MachineConfig, load_machines
from edge.connectors.mqtt.payload import effective_topic
from edge.simulators.profiles import NOISE, profile_for


def _gauss(rng, sigma: float) -> float:
    # random.Random and numpy's Generator are both accepted as rng.
    return rng.gauss(0.0, sigma) if hasattr(rng, "gauss") else float(rng.normal(0.0, sigma))


def _profile(machine: MachineConfig):
    cached = machine.__dict__.get("_sim_profile")
    if cached is None:
        cached = profile_for(machine.kind)
        if cached is None:
            raise ValueError(f"machine {machine.id}: no simulation profile for kind '{machine.kind}'")
        machine.__dict__["_sim_profile"] = cached
    return cached


def concrete_topic(topic_filter: str, machine_id: str) -> str:
    """A topic a machine would publish on for a subscription filter ('+' -> machine id, '#' -> 'telemetry')."""
    parts = ["telemetry" if p == "#" else machine_id if p == "+" else p for p in topic_filter.split("/")]
    return "/".join(parts)


def snapshot_for(machine: MachineConfig, t_s: float, rng, *, topic: str | None = None) -> dict:
    """The nested 'values' object of machine at t_s seconds into its process, with sensor noise from rng.

    topic (a filter from the signal map) limits it to the signals arriving on that topic; None = all.
    Signals the profile does not know are left out (a partial snapshot is valid)."""
    state = _profile(machine).state(t_s)
    values: dict = {}
    for s in machine.signals:
        if topic is not None and effective_topic(machine, s) != topic:
            continue
        if s.name not in state:
            continue
        v = state[s.name]
        if s.type == "float":
            v = float(v)
            if v != 0.0:  # a switched-off laser reads 0, not noise around it
                v += _gauss(rng, NOISE.get(s.name, 0.0))
            v = float(f"{v:.6g}")
        elif s.type == "int":
            v = int(v)
        elif s.type == "bool":
            v = bool(v)
        else:
            v = str(v)
        node = values
        *parents, leaf = s.source.path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return values


def payload_for(machine: MachineConfig, t_s: float, rng, *, topic: str | None = None, ts_ms: int | None = None,
                seq: int | None = None) -> bytes:
    """One JSON message as the machine would publish it (topic: a filter of its signal map; None = connection topic)."""
    doc: dict = {"ts": ts_ms if ts_ms is not None else time.time_ns() // 1_000_000}
    if seq is not None:
        doc["seq"] = seq
    doc["values"] = snapshot_for(machine, t_s, rng, topic=topic or machine.connection.topic)
    return json.dumps(doc, separators=(",", ":")).encode()


def messages_for(machine: MachineConfig, t_s: float, rng, *, ts_ms: int, seq: int) -> list[tuple[str, bytes]]:
    """(topic, payload) for every topic the machine publishes on, at one instant."""
    filters = list(dict.fromkeys(effective_topic(machine, s) for s in machine.signals))
    return [(concrete_topic(f, machine.id), payload_for(machine, t_s, rng, topic=f, ts_ms=ts_ms, seq=seq))
            for f in filters]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `simulate mqtt`."""
    parser.add_argument("--host", help="Broker host (default: each machine's configured host)")
    parser.add_argument("--port", type=int, help="Broker port (default: each machine's configured port)")
    parser.add_argument("--machines-dir", default="configs/machines", help="Folder of machine YAML files")
    parser.add_argument("--machine", action="append", default=[], metavar="ID",
                        help="Machine id to simulate (repeatable; default: every MQTT machine)")
    parser.add_argument("--rate", type=float, default=1.0, help="Messages per second per machine (default 1)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="Process time per wall-clock time, e.g. 60 = one process minute per second")
    parser.add_argument("--duration", type=float, help="Stop after this many seconds")
    parser.add_argument("--count", type=int, help="Stop after this many messages per machine and topic")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the sensor noise (same seed, same values)")
    parser.add_argument("--start", type=float, default=0.0, help="Process time (s) to start at, e.g. 570 = plateau")
    parser.add_argument("--quiet", action="store_true", help="Print only the summary")


def _summary(machine: MachineConfig, t_s: float) -> str:
    st = _profile(machine).state(t_s)
    for key, fmt in (("phase", "{}"), ("step", "{}"), ("printer_state", "{}"), ("program_step", "step {}")):
        if key in st:
            head = fmt.format(st[key])
            break
    else:
        head = ""
    for key, unit in (("chamber_temp_c", "°C"), ("zone_2_temp_c", "°C"), ("bath_temp_c", "°C"), ("layer", "")):
        if key in st:
            v = st[key]
            return f"{head}, {key}={v:.1f}{unit}" if isinstance(v, float) else f"{head}, {key}={v}"
    return head


def run(args: argparse.Namespace) -> int:
    """Publish simulated machines until --count/--duration (or Ctrl-C); 0 when all messages were confirmed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if args.rate <= 0 or args.speed <= 0:
        print("simulate mqtt: --rate and --speed must be positive", file=sys.stderr)
        return 2
    try:
        machines = load_machines(args.machines_dir, only=args.machine or None)
    except ConfigError as e:
        print(f"simulate mqtt: {e}", file=sys.stderr)
        return 2
    not_mqtt = [m.id for m in machines if m.connection.type != "mqtt"]
    if args.machine and not_mqtt:
        print(f"simulate mqtt: not MQTT machines: {', '.join(not_mqtt)}", file=sys.stderr)
        return 2
    machines = [m for m in machines if m.connection.type == "mqtt" and profile_for(m.kind) is not None]
    if not machines:
        print(f"simulate mqtt: no MQTT machine with a simulation profile in {args.machines_dir}", file=sys.stderr)
        return 2

    clients: dict[tuple[str, int], mqtt.Client] = {}
    for m in machines:
        broker = (args.host or m.connection.host, args.port or m.connection.port)
        if broker in clients:
            continue
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=f"amtrace-sim-{os.getpid()}-{len(clients)}", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(0.2, 5.0)
        try:
            client.connect(*broker)
        except OSError as e:
            print(f"simulate mqtt: cannot reach broker {broker[0]}:{broker[1]}: {e.strerror or e}", file=sys.stderr)
            return 2
        client.loop_start()
        clients[broker] = client

    rngs = {m.id: random.Random(f"{args.seed}:{m.id}") for m in machines}
    brokers = {m.id: clients[(args.host or m.connection.host, args.port or m.connection.port)] for m in machines}
    sent = {m.id: 0 for m in machines}
    unconfirmed: list = []
    interval = 1.0 / args.rate
    started = time.monotonic()
    last_ts_ms = 0
    last_progress = started
    tick = 0
    names = ", ".join(m.id for m in machines)
    if not args.quiet:
        print(f"simulating {names} at {args.rate:g} Hz, speed x{args.speed:g}, seed {args.seed}", flush=True)
    try:
        while True:
            if args.count is not None and tick >= args.count:
                break
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            delay = started + tick * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # Process time follows the tick, not the wall clock: same seed, same values, however loaded the host.
            t_s = args.start + tick * interval * args.speed
            # Machine time is the wall clock (never in the future), strictly increasing so no point overwrites one.
            ts_ms = max(time.time_ns() // 1_000_000, last_ts_ms + 1)
            last_ts_ms = ts_ms
            for m in machines:
                for topic, payload in messages_for(m, t_s, rngs[m.id], ts_ms=ts_ms, seq=tick):
                    unconfirmed.append(brokers[m.id].publish(topic, payload, qos=1))
                    sent[m.id] += 1
            tick += 1
            if len(unconfirmed) > 5000:
                unconfirmed = [i for i in unconfirmed if not i.is_published()]
            now = time.monotonic()
            if not args.quiet and now - last_progress >= 1.0:
                last_progress = now
                line = "; ".join(f"{m.id}: {sent[m.id]} msgs, {_summary(m, t_s)}" for m in machines)
                print(f"[{now - started:6.1f} s, process t={t_s:.0f} s] {line}", flush=True)
    except KeyboardInterrupt:
        pass
    missing = 0
    for info in unconfirmed:
        try:
            info.wait_for_publish(timeout=30)
        except (RuntimeError, ValueError):
            pass
        if not info.is_published():
            missing += 1
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    total = sum(sent.values())
    where = ", ".join(f"{h}:{p}" for h, p in clients)
    if missing:
        print(f"published {total} messages to {where}; {missing} NOT confirmed by the broker", file=sys.stderr)
        return 1
    print(f"published {total} messages ({tick} per machine and topic) to {where}, all confirmed by the broker",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.simulators.mqtt`."""
    parser = argparse.ArgumentParser(prog="python -m edge.simulators.mqtt", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
