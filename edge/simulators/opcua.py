"""Simulated OPC UA machines (asyncua servers): an LPBF metal printer and a heat-treatment furnace.

They look like real machines on the wire: OPC 40001-1 style identification under
Objects/Machines/<machine>/Identification, job state and layer counter, process signals with
source timestamps, a start-enable interlock the printer honours, optional message security and
user names. Every value the simulator publishes is kept in `history` (value, source time, status)
so tests can assert exact counts. A simulator can be stopped and restarted on the same port; its
state (values, timestamps, job) survives, as a real machine's would across a server restart.

Identification follows OPC 40001-1 without loading the Machinery/DI nodesets: the browse names
(Machines in the Machinery namespace; Identification, Manufacturer, Model, SerialNumber,
SoftwareRevision, HardwareRevision in the DI namespace, as MachineIdentificationType inherits them)
and the namespace URIs are the standard ones, the type definitions are plain folders/properties.
Job naming borrows from OPC 40540 (AM): Job/JobId, JobState, CurrentLayer, NumberOfLayers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole

log = logging.getLogger(__name__)

MACHINERY_NS = "http://opcfoundation.org/UA/Machinery/"
DI_NS = "http://opcfoundation.org/UA/DI/"
EPOCH_NS = 0


def ts_to_ns(ts: datetime) -> int:
    """OPC UA DateTime (timezone-aware or naive UTC) to Unix nanoseconds."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def ns_to_ts(ns: int) -> datetime:
    """Unix nanoseconds to a UTC datetime (microsecond resolution)."""
    return datetime.fromtimestamp(ns // 1000 / 1e6, tz=timezone.utc)


@dataclass
class Published:
    """One value the simulator published on a node."""

    value: Any
    source_ts_ns: int
    status: str | None = None  # None = Good


@dataclass
class _Var:
    key: str
    vtype: ua.VariantType
    value: Any
    ts_ns: int
    status: str | None = None
    writable: bool = False
    node: Any = None  # asyncua Node while the server runs


class _UserManager:
    """Users with passwords; None = anyone (anonymous included)."""

    def __init__(self, users: dict[str, str]):
        self.users = users

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None:
            return None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


_POLICY_TYPES = {
    ("Sign", "Basic256Sha256"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("SignAndEncrypt", "Basic256Sha256"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Sign", "Aes128_Sha256_RsaOaep"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("SignAndEncrypt", "Aes128_Sha256_RsaOaep"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Sign", "Aes256_Sha256_RsaPss"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("SignAndEncrypt", "Aes256_Sha256_RsaPss"): ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}


@dataclass
class SimSecurity:
    """Server-side security: which (mode, policy) endpoints exist, the server's own pair, trusted clients."""

    certificate: str
    private_key: str
    endpoints: list[tuple[str, str]] = field(default_factory=lambda: [("SignAndEncrypt", "Basic256Sha256")])
    trusted_clients: list[str] | None = None  # client certificate files; None = accept any client certificate
    allow_none: bool = False  # also offer an unsecured endpoint


def _complete_transfer_subscriptions(server: Server) -> None:
    """Make TransferSubscriptions move the publishing as well, as OPC 10000-4 §5.13.7 has it.

    asyncua 2.1's server moves a transferred subscription's responses to the new session but keeps taking
    publish requests from the old one, so the subscription never publishes again. A machine's server
    (node-opcua, vendor stacks) does it completely; the simulated machine should too.
    """
    service = server.iserver.subscription_service
    transfer = service.transfer_subscriptions

    async def complete(params, session_id, callback):
        results = await transfer(params, session_id, callback)
        processor = getattr(callback, "__self__", None)
        for sub_id, result in zip(params.SubscriptionIds, results):
            sub = service.subscriptions.get(int(sub_id))
            if sub is not None and result.StatusCode.is_good() and processor is not None:
                sub.pub_request_callback = processor.get_publish_request
        return results

    service.transfer_subscriptions = complete


class SimulatedMachine:
    """Base of the simulated machines: owns the state, (re)builds the asyncua server, runs the process loop."""

    machine_name = "Machine"
    identity: dict[str, str] = {}
    # False: TransferSubscriptions as asyncua's server does it (accepted, never published on), for the
    # connector's guard against servers that take a subscription over in name only.
    complete_transfer = True

    def __init__(
        self,
        *,
        port: int,
        machine_id: str,
        host: str = "127.0.0.1",
        namespace_uri: str | None = None,
        extra_namespaces: int = 0,
        security: SimSecurity | None = None,
        users: dict[str, str] | None = None,
        speed: float = 1.0,
        tick_s: float = 0.1,
        seed: int = 1,
    ):
        self.port = port
        self.host = host
        self.machine_id = machine_id
        self.namespace_uri = namespace_uri or f"urn:amtrace:sim:{machine_id}"
        self.extra_namespaces = extra_namespaces
        self.security = security
        self.users = users
        self.speed = speed
        self.tick_s = tick_s
        self.rng = random.Random(seed)
        self.vars: dict[str, _Var] = {}
        self.history: dict[str, list[Published]] = {}
        self.refusals: list[str] = []
        self.server: Server | None = None
        self.ns_index: int | None = None
        self._loop_task: asyncio.Task | None = None
        self._sim_time = 0.0
        self._define()

    # --- state --------------------------------------------------------------------------

    def _define(self) -> None:
        raise NotImplementedError

    def _add(self, key: str, vtype: ua.VariantType, value: Any, *, writable: bool = False) -> None:
        now = time.time_ns()
        self.vars[key] = _Var(key, vtype, value, now, writable=writable)
        self.history[key] = [Published(value, now // 1000 * 1000)]
        self.vars[key].ts_ns = now // 1000 * 1000

    @property
    def endpoint(self) -> str:
        """The opc.tcp URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}/amtrace/{self.machine_id}"

    @property
    def running(self) -> bool:
        """Whether the OPC UA server is up."""
        return self.server is not None

    def node_id(self, key: str) -> str:
        """Namespace-URI node id of a variable, e.g. 'nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Job.CurrentLayer'."""
        return f"nsu={self.namespace_uri};s={self.machine_id}.{key}"

    def value(self, key: str) -> Any:
        """Current value of a variable (the machine's view)."""
        return self.vars[key].value

    async def set(self, key: str, value: Any, *, status: str | None = None) -> bool:
        """Change a value (and publish it when the server runs); return False when nothing changed."""
        var = self.vars[key]
        if var.vtype == ua.VariantType.Double and value is not None:
            value = float(value)
        if value == var.value and status == var.status:
            return False
        # Source timestamps are strictly increasing per node (microsecond resolution on the wire).
        ts = max(time.time_ns() // 1000 * 1000, var.ts_ns + 1000)
        var.value, var.status, var.ts_ns = value, status, ts
        self.history[key].append(Published(value, ts, status))
        if self.server is not None and var.node is not None:
            await self.server.write_attribute_value(var.node.nodeid, self._datavalue(var))
        return True

    def _datavalue(self, var: _Var) -> ua.DataValue:
        ts = ns_to_ts(var.ts_ns)
        if var.status is not None:
            code = ua.StatusCode(getattr(ua.StatusCodes, var.status))
            variant = ua.Variant() if code.is_bad() else ua.Variant(var.value, var.vtype)
            return ua.DataValue(variant, StatusCode=code, SourceTimestamp=ts, ServerTimestamp=ts)
        return ua.DataValue(ua.Variant(var.value, var.vtype), SourceTimestamp=ts, ServerTimestamp=ts)

    async def set_software_revision(self, revision: str) -> None:
        """Change Identification/SoftwareRevision at run time (a firmware update)."""
        self.identity["SoftwareRevision"] = revision
        await self.set("Identification.SoftwareRevision", revision)

    async def set_sensor_fault(self, key: str, status: str | None = "BadSensorFailure") -> None:
        """Make a signal report a bad status (no value) until cleared with status=None."""
        await self.set(key, self.vars[key].value, status=status)

    # --- server lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> "SimulatedMachine":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the OPC UA server and the process loop (the loop keeps running across stop/start)."""
        if self.server is None:
            await self._start_server()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run_loop())

    async def stop(self) -> None:
        """Stop the OPC UA server only: the machine keeps running (values keep changing unseen)."""
        server, self.server = self.server, None
        if server is not None:
            for var in self.vars.values():
                var.node = None
            await server.stop()

    async def restart(self, down_s: float = 0.0) -> None:
        """Stop the server, stay down for down_s seconds, start it again on the same port."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self._start_server()

    async def close(self) -> None:
        """Stop everything."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        await self.stop()

    async def _start_server(self) -> None:
        server = Server()
        await server.init()
        if self.complete_transfer:
            _complete_transfer_subscriptions(server)
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"amtrace simulated {self.machine_name} {self.machine_id}")
        await server.set_application_uri(f"urn:amtrace:sim:server:{self.machine_id}")
        if self.users is not None:
            server.iserver.user_manager = _UserManager(self.users)
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self.security is not None:
            sec = self.security
            await server.load_certificate(sec.certificate)
            await server.load_private_key(sec.private_key)
            policies = [_POLICY_TYPES[(m, p)] for m, p in sec.endpoints]
            if sec.allow_none:
                policies.insert(0, ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(policies)
            if sec.trusted_clients is not None:
                trusted = set()
                for path in sec.trusted_clients:
                    cert = await uacrypto.load_certificate(path)
                    trusted.add(uacrypto.der_from_x509(cert))

                async def validate(cert, app_description):
                    if uacrypto.der_from_x509(cert) not in trusted:
                        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

                server.set_certificate_validator(validate)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        # Padding namespaces shift every index after them: configs must survive that (nsu=, browse paths).
        for i in range(self.extra_namespaces):
            await server.register_namespace(f"urn:amtrace:sim:padding:{i}")
        machinery = await server.register_namespace(MACHINERY_NS)
        di = await server.register_namespace(DI_NS)
        idx = await server.register_namespace(self.namespace_uri)
        self.ns_index = idx
        await self._build_address_space(server, idx, machinery, di)
        await server.start()
        self.server = server
        log.info("%s simulator listening on %s (ns=%d)", self.machine_id, self.endpoint, idx)

    def _nid(self, idx: int, key: str) -> ua.NodeId:
        return ua.NodeId(f"{self.machine_id}.{key}", idx)

    async def _build_address_space(self, server: Server, idx: int, machinery: int, di: int) -> None:
        objects = server.nodes.objects
        machines = await objects.add_folder(ua.NodeId("Machines", machinery), ua.QualifiedName("Machines", machinery))
        machine = await machines.add_object(
            ua.NodeId(self.machine_id, idx), ua.QualifiedName(self.machine_name, idx)
        )
        folders: dict[str, Any] = {"": machine}
        for key, var in self.vars.items():
            parent_key, _, name = key.rpartition(".")
            parent = await self._folder(folders, parent_key, idx, di)
            bname = ua.QualifiedName(name, di if parent_key == "Identification" else idx)
            dv = self._datavalue(var)
            if parent_key == "Identification":
                node = await parent.add_property(self._nid(idx, key), bname, dv.Value.Value, var.vtype)
            else:
                node = await parent.add_variable(self._nid(idx, key), bname, dv.Value.Value, var.vtype)
            await server.write_attribute_value(node.nodeid, dv)
            if var.writable:
                await node.set_writable()
            var.node = node
        await self._add_methods(server, folders, idx)

    async def _folder(self, folders: dict, key: str, idx: int, di: int):
        if key in folders:
            return folders[key]
        parent_key, _, name = key.rpartition(".")
        parent = await self._folder(folders, parent_key, idx, di)
        ns = di if key == "Identification" else idx
        node = await parent.add_object(self._nid(idx, key), ua.QualifiedName(name, ns))
        folders[key] = node
        return node

    async def _add_methods(self, server: Server, folders: dict, idx: int) -> None:
        """Machine-specific methods (start job, interlock); none by default."""

    # --- process loop -------------------------------------------------------------------

    async def _run_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.tick_s
            try:
                await self.step(self.tick_s * self.speed)
            except Exception:  # a simulator bug must not silently freeze the machine
                log.exception("simulator step failed")
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def step(self, dt: float) -> None:
        """Advance the simulated process by dt seconds of machine time."""


class LpbfPrinterSimulator(SimulatedMachine):
    """A metal laser powder-bed fusion printer: layers, laser power, chamber O2/pressure/gas flow, plate temperature."""

    machine_name = "LPBF-Printer"

    def __init__(self, *, port: int, machine_id: str = "lpbf-01", layer_time_s: float = 2.0,
                 o2_excursion_probability: float = 0.05, **kw):
        self.layer_time_s = layer_time_s
        self.o2_excursion_probability = o2_excursion_probability
        self.identity = {
            "Manufacturer": "amtrace simulated machines",
            "Model": "LPBF-SIM 280",
            "SerialNumber": "SIM-LPBF-0001",
            "SoftwareRevision": "4.2.0",
            "HardwareRevision": "B",
        }
        super().__init__(port=port, machine_id=machine_id, **kw)
        self._layer_elapsed = 0.0
        self._excursion_left = 0
        self.job_done = asyncio.Event()

    def _define(self) -> None:
        S, D, B, U = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.Boolean, ua.VariantType.UInt32
        for name, value in self.identity.items():
            self._add(f"Identification.{name}", S, value)
        self._add("Job.JobId", S, "")
        self._add("Job.JobState", S, "Idle")
        self._add("Job.CurrentLayer", U, 0)
        self._add("Job.NumberOfLayers", U, 0)
        # Path of the build file the machine loaded (as its build-preparation software reports it).
        self._add("Job.BuildFile", S, "", writable=True)
        self._add("Laser.PowerSetpoint", D, 0.0)
        self._add("Laser.PowerActual", D, 0.0)
        self._add("Chamber.OxygenConcentration", D, 800.0)
        self._add("Chamber.Pressure", D, 1013.0)
        self._add("Chamber.GasFlow", D, 0.0)
        self._add("BuildPlate.Temperature", D, 25.0)
        self._add("Recoater.State", S, "Idle")
        self._add("Interlock.StartEnabled", B, True, writable=True)
        self._add("Interlock.LastRefusal", S, "")

    async def _add_methods(self, server: Server, folders: dict, idx: int) -> None:
        async def start_job(parent, job_id, layers):
            job_id = job_id.Value if isinstance(job_id, ua.Variant) else job_id
            layers = layers.Value if isinstance(layers, ua.Variant) else layers
            ok, why = await self.start_job(str(job_id), int(layers))
            if not ok:
                return ua.StatusCode(ua.StatusCodes.BadInvalidState)
            return [ua.Variant(True, ua.VariantType.Boolean)]

        async def set_start_enabled(parent, enabled):
            enabled = enabled.Value if isinstance(enabled, ua.Variant) else enabled
            await self.set("Interlock.StartEnabled", bool(enabled))
            return [ua.Variant(bool(enabled), ua.VariantType.Boolean)]

        await folders["Job"].add_method(
            self._nid(idx, "Job.StartJob"), ua.QualifiedName("StartJob", idx), start_job,
            [ua.VariantType.String, ua.VariantType.UInt32], [ua.VariantType.Boolean],
        )
        await folders["Interlock"].add_method(
            self._nid(idx, "Interlock.SetStartEnabled"), ua.QualifiedName("SetStartEnabled", idx), set_start_enabled,
            [ua.VariantType.Boolean], [ua.VariantType.Boolean],
        )

    async def _start_enabled(self) -> bool:
        # A client may have written the node directly: the server's value is what the machine obeys.
        var = self.vars["Interlock.StartEnabled"]
        if self.server is not None and var.node is not None:
            dv = self.server.read_attribute_value(var.node.nodeid)
            if dv.Value is not None and dv.Value.Value != var.value:
                var.value = dv.Value.Value
                var.ts_ns = ts_to_ns(dv.SourceTimestamp) if dv.SourceTimestamp else time.time_ns()
                self.history[var.key].append(Published(var.value, var.ts_ns))
        return bool(var.value)

    async def start_job(self, job_id: str, layers: int) -> tuple[bool, str]:
        """Start a build of `layers` layers; refused (and recorded) while StartEnabled is false or a job runs."""
        if not await self._start_enabled():
            why = f"start of job {job_id} refused: StartEnabled is false"
        elif self.value("Job.JobState") == "Running":
            why = f"start of job {job_id} refused: job {self.value('Job.JobId')} is running"
        else:
            why = ""
        if why:
            self.refusals.append(why)
            await self.set("Interlock.LastRefusal", why)
            log.warning("%s: %s", self.machine_id, why)
            return False, why
        self.job_done.clear()
        self._layer_elapsed = 0.0
        await self.set("Job.JobId", job_id)
        await self.set("Job.NumberOfLayers", layers)
        await self.set("Job.CurrentLayer", 0)
        await self.set("Job.JobState", "Running")
        await self.set("Chamber.GasFlow", 42.0)
        await self.set("Laser.PowerSetpoint", 280.0)
        await self.set("BuildPlate.Temperature", 80.0)
        return True, ""

    async def wait_job_done(self, timeout: float) -> None:
        """Wait until the running job completes."""
        await asyncio.wait_for(self.job_done.wait(), timeout)

    async def step(self, dt: float) -> None:
        if self.value("Job.JobState") != "Running":
            return
        r = self.rng
        layer = self.value("Job.CurrentLayer")
        self._layer_elapsed += dt
        if self._layer_elapsed >= self.layer_time_s:
            self._layer_elapsed = 0.0
            layer += 1
            await self.set("Job.CurrentLayer", layer)
            if r.random() < self.o2_excursion_probability:
                self._excursion_left = 3
            if layer >= self.value("Job.NumberOfLayers"):
                await self.set("Laser.PowerActual", 0.0)
                await self.set("Laser.PowerSetpoint", 0.0)
                await self.set("Recoater.State", "Idle")
                await self.set("Chamber.GasFlow", 0.0)
                await self.set("Job.JobState", "Completed")
                self.job_done.set()
                return
        exposing = self._layer_elapsed >= 0.25 * self.layer_time_s
        await self.set("Recoater.State", "Idle" if exposing else "Recoating")
        await self.set("Laser.PowerActual", round(280.0 + r.gauss(0, 2.0), 1) if exposing else 0.0)
        if self._excursion_left > 0:
            self._excursion_left -= 1
            o2 = round(r.uniform(600, 1200), 0)
        else:
            o2 = round(max(5.0, 120 + r.gauss(0, 15)), 0)
        await self.set("Chamber.OxygenConcentration", o2)
        await self.set("Chamber.Pressure", round(1013 + 12 + r.gauss(0, 0.5), 1))
        await self.set("Chamber.GasFlow", round(42 + r.gauss(0, 0.4), 1))
        await self.set("BuildPlate.Temperature", round(80 + r.gauss(0, 0.3), 1))


# Furnace profile: ramp to setpoint at a rate, hold, cool at a rate (stress relief of Ti-6Al-4V / CoCr).
@dataclass
class FurnaceProgram:
    """Ramp/hold/cool program of a heat-treatment cycle (rates in K/min, hold in min)."""

    setpoint_c: float = 650.0
    ramp_k_per_min: float = 10.0
    hold_min: float = 120.0
    cool_k_per_min: float = 5.0
    unload_c: float = 80.0


class FurnaceSimulator(SimulatedMachine):
    """A vacuum/argon heat-treatment furnace: setpoint, three zone temperatures, ramp/hold/cool phases."""

    machine_name = "HeatTreatmentFurnace"

    def __init__(self, *, port: int, machine_id: str = "furnace-02", **kw):
        self.identity = {
            "Manufacturer": "amtrace simulated machines",
            "Model": "HT-SIM 900",
            "SerialNumber": "SIM-FURN-0002",
            "SoftwareRevision": "2.1.3",
            "HardwareRevision": "A",
        }
        super().__init__(port=port, machine_id=machine_id, **kw)
        self.program: FurnaceProgram | None = None
        self._phase_time = 0.0
        self.cycle_done = asyncio.Event()

    def _define(self) -> None:
        S, D, B = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.Boolean
        for name, value in self.identity.items():
            self._add(f"Identification.{name}", S, value)
        self._add("Cycle.CycleId", S, "")
        self._add("Cycle.Phase", S, "Idle")
        self._add("Control.Setpoint", D, 25.0)
        for z in (1, 2, 3):
            self._add(f"Zones.Zone{z}Temperature", D, 25.0)
        self._add("Atmosphere.ArgonFlow", D, 0.0)
        self._add("Atmosphere.VacuumPressure", D, 1013.0)
        self._add("Interlock.StartEnabled", B, True, writable=True)

    async def start_cycle(self, cycle_id: str, program: FurnaceProgram | None = None) -> bool:
        """Start a ramp/hold/cool cycle; refused while StartEnabled is false."""
        if not self.value("Interlock.StartEnabled"):
            self.refusals.append(f"start of cycle {cycle_id} refused: StartEnabled is false")
            return False
        self.program = program or FurnaceProgram()
        self.cycle_done.clear()
        self._phase_time = 0.0
        await self.set("Cycle.CycleId", cycle_id)
        await self.set("Cycle.Phase", "Ramp")
        await self.set("Atmosphere.ArgonFlow", 15.0)
        return True

    async def step(self, dt: float) -> None:
        prog, phase = self.program, self.value("Cycle.Phase")
        if prog is None or phase in ("Idle", "Complete"):
            return
        sp = self.value("Control.Setpoint")
        if phase == "Ramp":
            sp = min(prog.setpoint_c, sp + prog.ramp_k_per_min * dt / 60)
            if sp >= prog.setpoint_c:
                await self.set("Cycle.Phase", "Hold")
                self._phase_time = 0.0
        elif phase == "Hold":
            self._phase_time += dt
            if self._phase_time >= prog.hold_min * 60:
                await self.set("Cycle.Phase", "Cool")
        elif phase == "Cool":
            sp = max(prog.unload_c, sp - prog.cool_k_per_min * dt / 60)
            if sp <= prog.unload_c:
                await self.set("Cycle.Phase", "Complete")
                await self.set("Atmosphere.ArgonFlow", 0.0)
                self.cycle_done.set()
        await self.set("Control.Setpoint", round(sp, 1))
        for z, lag in ((1, 0.0), (2, 1.5), (3, -1.0)):
            t = sp + lag + self.rng.gauss(0, 0.4)
            await self.set(f"Zones.Zone{z}Temperature", round(t, 1))


class BenchSimulator(SimulatedMachine):
    """A synthetic machine for the benchmark: `nodes` Double variables changing `rate` times per second in total."""

    machine_name = "BenchMachine"

    def __init__(self, *, port: int, nodes: int = 1000, rate: float = 10_000, machine_id: str = "bench-01", **kw):
        self.nodes, self.rate = nodes, rate
        self.identity = {"Manufacturer": "amtrace", "Model": "bench", "SerialNumber": machine_id,
                         "SoftwareRevision": "1", "HardwareRevision": "1"}
        super().__init__(port=port, machine_id=machine_id, tick_s=kw.pop("tick_s", 0.02), **kw)
        self._cursor = 0
        self._carry = 0.0
        self.published = 0

    def _define(self) -> None:
        for name, value in self.identity.items():
            self._add(f"Identification.{name}", ua.VariantType.String, value)
        for i in range(self.nodes):
            self._add(f"Signals.S{i:05d}", ua.VariantType.Double, 0.0)
        # The benchmark does not compare histories: keep memory flat over long runs.
        self.history = {}

    async def set(self, key: str, value: Any, *, status: str | None = None) -> bool:
        var = self.vars[key]
        ts = max(time.time_ns() // 1000 * 1000, var.ts_ns + 1000)
        var.value, var.ts_ns = value, ts
        if self.server is not None and var.node is not None:
            await self.server.write_attribute_value(var.node.nodeid, self._datavalue(var))
        return True

    async def step(self, dt: float) -> None:
        self._carry += self.rate * self.tick_s
        n, self._carry = int(self._carry), self._carry - int(self._carry)
        for _ in range(n):
            key = f"Signals.S{self._cursor:05d}"
            self._cursor = (self._cursor + 1) % self.nodes
            await self.set(key, self.vars[key].value + 1.0)
        self.published += n


SIMULATORS = {"lpbf": LpbfPrinterSimulator, "furnace": FurnaceSimulator, "bench": BenchSimulator}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `amtrace-edge simulate opcua`."""
    parser.add_argument("--machine", default="lpbf-01", help="machine id; kind from its prefix (lpbf-*, furnace-*, bench-*)")
    parser.add_argument("--kind", choices=sorted(SIMULATORS), help="simulator kind (default: from --machine)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=4840, help="TCP port")
    parser.add_argument("--namespace-uri", help="machine namespace URI (default urn:amtrace:sim:<machine>)")
    parser.add_argument("--extra-namespaces", type=int, default=0, help="padding namespaces that shift the index")
    parser.add_argument("--speed", type=float, default=1.0, help="machine-time factor (10 = ten times faster)")
    parser.add_argument("--security", choices=["None", "Sign", "SignAndEncrypt"], default="None", help="security mode")
    parser.add_argument("--policy", default="Basic256Sha256", help="security policy when --security is not None")
    parser.add_argument("--cert", help="server certificate (DER/PEM); required with --security")
    parser.add_argument("--key", help="server private key (PEM); required with --security")
    parser.add_argument("--trust", action="append", help="trusted client certificate (repeatable; default any)")
    parser.add_argument("--user", action="append", help="user:password allowed to log in (repeatable; default anonymous)")
    parser.add_argument("--job", help="start a job right away: JOBID:LAYERS (printer) or CYCLEID (furnace)")
    parser.add_argument("--job-on-enable", metavar="JOBID:LAYERS",
                        help="printer: start this job once the start is enabled after having been blocked (as an "
                             "operator presses start when the machine allows it)")
    parser.add_argument("--layer-time", type=float, default=2.0, help="printer: seconds per layer")
    parser.add_argument("--o2-excursions", type=float, default=0.05,
                        help="printer: probability per layer of a 3-layer chamber O2 excursion (0 = none)")
    parser.add_argument("--nodes", type=int, default=1000, help="bench: number of variables")
    parser.add_argument("--rate", type=float, default=10_000, help="bench: value changes per second in total")
    parser.add_argument("--ready-file", help="write the endpoint into this file once listening")
    parser.add_argument("--stats-file", help="bench: rewrite '<unix time> <values published>' here every second")


async def _serve(args) -> int:
    kind = args.kind or args.machine.split("-")[0]
    if kind not in SIMULATORS:
        print(f"simulate opcua: unknown kind for machine '{args.machine}'; use --kind {'/'.join(SIMULATORS)}")
        return 2
    security = None
    if args.security != "None":
        if not (args.cert and args.key):
            print("simulate opcua: --security needs --cert and --key (create them with: opcua make-cert)")
            return 2
        security = SimSecurity(args.cert, args.key, [(args.security, args.policy)], trusted_clients=args.trust)
    users = dict(u.split(":", 1) for u in args.user) if args.user else None
    extra: dict[str, Any] = {}
    if kind == "bench":
        extra = {"nodes": args.nodes, "rate": args.rate}
    elif kind == "lpbf":
        extra = {"layer_time_s": args.layer_time, "o2_excursion_probability": args.o2_excursions}
    sim = SIMULATORS[kind](
        port=args.port, machine_id=args.machine, host=args.host, namespace_uri=args.namespace_uri,
        extra_namespaces=args.extra_namespaces, security=security, users=users, speed=args.speed, **extra,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        print(f"simulating {kind} '{args.machine}' on {sim.endpoint} (namespace {sim.namespace_uri})", flush=True)
        if args.ready_file:
            Path(args.ready_file).write_text(sim.endpoint)
        if args.job and kind == "lpbf":
            job, _, layers = args.job.partition(":")
            await sim.start_job(job, int(layers or 100))
        elif args.job and kind == "furnace":
            await sim.start_cycle(args.job)
        if args.job_on_enable and kind == "lpbf":
            job, _, layers = args.job_on_enable.partition(":")
            sim.job_on_enable = asyncio.create_task(_start_when_enabled(sim, job, int(layers or 100), stop))
        if args.stats_file and kind == "bench":
            while not stop.is_set():
                Path(args.stats_file).write_text(f"{time.time()} {sim.published}")
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        await stop.wait()
    return 0


async def _start_when_enabled(sim: "LpbfPrinterSimulator", job: str, layers: int, stop: asyncio.Event) -> None:
    """Start job once StartEnabled went false (the agent's decision arrived) and then true (the gate allowed it)."""
    blocked = False
    while not stop.is_set():
        enabled = await sim._start_enabled()
        if not enabled:
            blocked = True
        elif blocked:
            ok, why = await sim.start_job(job, layers)
            print(f"job {job}: {'started' if ok else why}", flush=True)
            if ok:
                return
        await asyncio.sleep(0.5)


def run(args) -> int:
    """Run a simulator until interrupted (`amtrace-edge simulate opcua ...`)."""
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_serve(args))


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.simulators.opcua`."""
    parser = argparse.ArgumentParser(prog="python -m edge.simulators.opcua", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
