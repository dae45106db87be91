"""The build-file guard: a build file reaching a machine is checked against the approved files of
the job on that machine, the result recorded, and the machine's start blocked on any mismatch.

Detection here is the watched folder per machine (`build_files.folder` in the machine file).
Approved hashes come from a local approvals file (`approvals_file` in the agent file) in the
shape the server's agent API returns (edge.validation.approvals.JobApprovals); the server
becomes the source later through ApprovalsSource."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import yaml
from pydantic import TypeAdapter, ValidationError

from edge.config import MachineConfig
from edge.connectors.base import ConnectorError
from edge.readings import Event
from edge.validation.approvals import JobApprovals
from edge.validation.hashing import sha256_file
from edge.validation.verify import VerificationResult, verify_build_file

if TYPE_CHECKING:
    from edge.parts import GuardParts
    from edge.serverlink import ObservedSink, ServerLink

log = logging.getLogger("amtrace.buildfiles")

_APPROVALS = TypeAdapter(list[JobApprovals])


class ApprovalsSource(Protocol):
    """Where the approved build files of a job come from."""

    def lookup(self, machine_id: str, job_id: str) -> JobApprovals | None:
        """The approvals for job_id on machine_id, or None when there are none."""


class LocalApprovals:
    """Approvals from a YAML/JSON file holding a list of JobApprovals; re-read when it changes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._jobs: dict[tuple[str, str], JobApprovals] = {}
        self.error: str | None = None

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._jobs, self._mtime, self.error = {}, None, f"approvals file {self.path} does not exist"
            return
        if mtime == self._mtime:
            return
        try:
            text = self.path.read_text()
            data = json.loads(text) if self.path.suffix == ".json" else yaml.safe_load(text)
            jobs = _APPROVALS.validate_python(data or [])
        except (OSError, ValueError, yaml.YAMLError, ValidationError) as e:
            # Keep nothing rather than something stale: every build file is then a mismatch.
            self._jobs, self._mtime = {}, mtime
            self.error = f"approvals file {self.path} is invalid: {e}"
            log.error(self.error)
            return
        self._jobs = {(j.machine_id, j.job_id): j for j in jobs}
        self._mtime, self.error = mtime, None

    def lookup(self, machine_id: str, job_id: str) -> JobApprovals | None:
        """The approvals for job_id on machine_id, or None."""
        self._reload()
        return self._jobs.get((machine_id, job_id))


@dataclass
class CheckOutcome:
    """What the guard decided about one build file."""

    machine_id: str
    file: str
    allowed: bool  # the file check alone: identical (or geometry-equal where the policy allows)
    verdict: str
    reasons: list[str]
    sha256: str | None
    design_iteration: str | None
    interlock: str | None  # what the interlock write did, or why it could not
    job: str | None = None
    start_enabled: bool = False  # file check passed AND the server's clearance (when there is a server)
    server_reasons: list[str] | None = None


class BuildFileGuard:
    """Polls each machine's build-file folder and checks every new or changed file once it is stable."""

    def __init__(self, parts: "GuardParts", sink: "ObservedSink", approvals: ApprovalsSource | None, *,
                 server_link: "ServerLink | None" = None, poll_s: float = 0.5):
        self.parts = parts
        self.sink = sink
        self.server_link = server_link
        self.approvals = approvals
        self.poll_s = poll_s
        self.machines = [m for m in parts.machines
                         if (m.build_files and (m.build_files.folder or m.build_files.mqtt_topic))
                         or any(s.role == "build_file_path" for s in m.signals)]
        self._by_id = {m.id: m for m in self.machines}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mqtt: list = []
        self._seen: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) already checked
        self._pending: dict[Path, tuple[int, int]] = {}  # path -> last observed, waiting to be stable
        self.outcomes: list[CheckOutcome] = []
        self._last: dict[str, CheckOutcome] = {}  # machine -> latest check
        # The watched folders exist once the guard does (the agent makes it before its API answers): a file
        # dropped as soon as the agent is up has somewhere to go.
        for m in self.machines:
            if m.build_files and m.build_files.folder:
                Path(m.build_files.folder).mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        """Watch until cancelled: folders by polling, MQTT topics and machine variables by callback."""
        self._loop = asyncio.get_running_loop()
        self.parts.live.on_build_file_path = self.announce
        folders = [m for m in self.machines if m.build_files and m.build_files.folder]
        for m in folders:
            log.info("machine %s: watching %s for build files", m.id, m.build_files.folder)
        for m in self.machines:
            if m.build_files and m.build_files.mqtt_topic:
                self._mqtt.append(self._subscribe(m))
        try:
            while True:
                for m in folders:
                    try:
                        await self._scan(m)
                    except Exception:  # noqa: BLE001 - one bad scan must not stop the guard
                        log.exception("machine %s: scanning build files failed", m.id)
                await asyncio.sleep(self.poll_s)
        finally:
            for client in self._mqtt:
                client.loop_stop()
                client.disconnect()

    def announce(self, machine_id: str, path: str) -> None:
        """A machine reported (or was sent) a build file at path: check it (callable from any thread)."""
        machine = self._by_id.get(machine_id)
        if machine is None or self._loop is None:
            log.error("build file %s announced for machine %s, which has no build-file check configured", path, machine_id)
            return
        log.info("machine %s: build file announced: %s", machine_id, path)
        asyncio.run_coroutine_threadsafe(self.check(machine, Path(path)), self._loop)

    def _subscribe(self, machine: MachineConfig):
        """A persistent MQTT session on the machine's broker for its build-file topic."""
        import base64

        from edge.connectors.mqtt.client import connect_kwargs, make_client

        conn = machine.connection
        incoming = self.parts.state_dir / "build-files" / machine.id
        incoming.mkdir(parents=True, exist_ok=True)
        limit = machine.build_files.max_bytes

        def on_message(client, userdata, msg):
            # paho acknowledges when this returns: a carried file is on disk before the broker forgets it.
            try:
                if len(msg.payload) > limit * 4 // 3 + 1024:
                    raise ValueError(f"message of {len(msg.payload)} bytes exceeds the build-file limit of {limit} bytes")
                doc = json.loads(msg.payload)
                if not isinstance(doc, dict):
                    raise ValueError("expected a JSON object")
                if "path" in doc and set(doc) <= {"path", "file_name"}:
                    self.announce(machine.id, str(doc["path"]))
                    return
                if set(doc) != {"file_name", "content_base64"}:
                    raise ValueError('expected {"path": ...} or {"file_name": ..., "content_base64": ...}, '
                                     f"got keys {sorted(doc)}")
                name = Path(str(doc["file_name"])).name  # never a path: no traversal out of the folder
                if not name or name.startswith("."):
                    raise ValueError(f"file_name {doc['file_name']!r} is not a plain file name")
                content = base64.b64decode(doc["content_base64"], validate=True)
                if len(content) > limit:
                    raise ValueError(f"file of {len(content)} bytes exceeds the limit of {limit} bytes")
                target = incoming / f"{time.time_ns()}-{name}"
                with open(target, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                self.announce(machine.id, str(target))
            except (ValueError, UnicodeDecodeError) as e:
                self.sink.quarantine(source="buildfile", origin=msg.topic, raw=bytes(msg.payload[:65536]),
                                           reason=f"build-file message refused: {e}", machine_id=machine.id)

        # The connector's client setup (TLS, credentials, persistent session); paho reconnects this side
        # channel within the project's backoff bounds, and the session keeps what arrives meanwhile.
        client = make_client(conn, f"amtrace-{self.parts.agent_id}-{machine.id}-buildfiles", machine_id=machine.id,
                             reconnect=True)
        client.on_message = on_message
        client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(machine.build_files.mqtt_topic, qos=1)
        client.connect_async(**connect_kwargs(conn))
        client.loop_start()
        log.info("machine %s: build files announced on MQTT topic %s", machine.id, machine.build_files.mqtt_topic)
        return client

    async def _scan(self, machine: MachineConfig) -> None:
        folder = Path(machine.build_files.folder)
        for path in sorted(folder.iterdir()):
            if not path.is_file() or not any(fnmatch.fnmatch(path.name.lower(), p) for p in machine.build_files.patterns):
                continue
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            if self._seen.get(path) == sig:
                continue
            # A file still being written changes between two scans; check it once it holds still.
            if self._pending.get(path) != sig:
                self._pending[path] = sig
                continue
            del self._pending[path]
            self._seen[path] = sig
            await self.check(machine, path)

    async def check(self, machine: MachineConfig, path: Path) -> CheckOutcome:
        """Verify one build file for the job on machine, record it, and set the interlock."""
        assignment = self.parts.assignments.current(machine.id)
        approvals = None
        if assignment is not None and self.approvals is not None:
            approvals = self.approvals.lookup(machine.id, assignment.job)
        if assignment is None:
            outcome = CheckOutcome(machine.id, str(path), False, "no_job",
                                   [f"no job is assigned to machine {machine.id}: a build file cannot be matched"],
                                   None, None, None)
        elif approvals is None or not approvals.files:
            why = getattr(self.approvals, "error", None)
            outcome = CheckOutcome(machine.id, str(path), False, "not_approved",
                                   [f"no approved design for job {assignment.job} on machine {machine.id}"
                                    + (f" ({why})" if why else "")], None, None, None)
        else:
            result, iteration = await asyncio.to_thread(self._verify, machine, path, approvals)
            outcome = CheckOutcome(machine.id, str(path), result.allowed_to_build, result.verdict, result.reasons,
                                   result.sha256, iteration, None)
        outcome.job = assignment.job if assignment else None
        self._apply_clearance(outcome)
        link = self.server_link
        if link is not None and outcome.job is not None:
            link.report_build_file_check(machine.id, outcome.job, Path(outcome.file).name, outcome.sha256,
                                         outcome.allowed, "; ".join(outcome.reasons))
        outcome.interlock = await self._interlock(machine, outcome)
        self._record(machine, outcome)
        self.outcomes.append(outcome)
        self._last[machine.id] = outcome
        return outcome

    def _apply_clearance(self, outcome: CheckOutcome) -> None:
        """Start is enabled only if the file passed and the server (when there is one) clears the machine."""
        link = self.server_link
        if link is None:
            outcome.start_enabled, outcome.server_reasons = outcome.allowed, None
            return
        clearance = link.clearance(outcome.machine_id)
        outcome.server_reasons = clearance.reasons
        outcome.start_enabled = outcome.allowed and clearance.allowed

    async def reconcile(self, machine_id: str) -> None:
        """Re-apply the interlock when the server's clearance changed (job released, scope unqualified …)."""
        last = self._last.get(machine_id)
        if last is None:
            return
        current = self.parts.assignments.current(machine_id)
        if current is not None and current.job != last.job and Path(last.file).exists():
            # A new job on the machine: the file loaded on it is checked again, now against that job.
            await self.check(self._by_id[machine_id], Path(last.file))
            return
        if current is None or current.job != last.job:
            if last.start_enabled:
                last.allowed, last.reasons = False, last.reasons + ["the job the file was checked for has ended"]
            else:
                return
        before = last.start_enabled
        self._apply_clearance(last)
        if last.start_enabled == before:
            return
        machine = self._by_id[machine_id]
        last.interlock = await self._interlock(machine, last)
        self._record(machine, last, kind="interlock")

    def _verify(self, machine: MachineConfig, path: Path,
                approvals: JobApprovals) -> tuple[VerificationResult, str | None]:
        """Check path against each approved file; the best verdict wins (identical > geometry equal > different)."""
        volume = None
        if machine.build_volume is not None:
            bv = machine.build_volume
            volume = (bv.x_mm, bv.y_mm, bv.z_mm)
        rank = {"identical": 3, "geometry_equal": 2, "different": 1, "invalid": 0}
        best: VerificationResult | None = None
        best_iteration = None
        for approved in approvals.files:
            # "same geometry, different file" may build only where both the product (approval) and
            # the machine configuration allow it; off by default on both.
            policy = approved.allow_geometry_equal and machine.allow_geometry_equal
            result = verify_build_file(path, approved=approved, build_volume_mm=volume, allow_geometry_equal=policy,
                                       design_path=self._trusted_design_copy(approved))
            if best is None or rank.get(result.verdict, 0) > rank.get(best.verdict, 0):
                best, best_iteration = result, approved.design_iteration
            if result.verdict == "identical":
                break
        return best, best_iteration

    def _trusted_design_copy(self, approved) -> Path | None:
        """The local copy of the approved file, only when its bytes are the approved ones.

        The copy feeds the difference report ("0.05 mm thicker near ..."); a copy that does not
        hash to the approved SHA-256 must never become the reference, so it is ignored."""
        if not approved.design_file:
            return None
        copy = Path(approved.design_file)
        try:
            if sha256_file(copy) == approved.sha256:
                return copy
        except OSError as e:
            log.warning("approved design copy %s cannot be read: %s", copy, e.strerror)
            return None
        log.error("approved design copy %s does not match the approved SHA-256: ignored", copy)
        return None

    async def _interlock(self, machine: MachineConfig, outcome: CheckOutcome) -> str:
        connector = self.parts.connectors.get(machine.id)
        reason = (f"build file {Path(outcome.file).name}: " + "; ".join(outcome.reasons + (outcome.server_reasons or [])))[:500]
        if connector is None:
            return "no connector"
        try:
            done = await connector.set_start_enabled(outcome.start_enabled, reason=reason)
            log.info("machine %s: start %s (%s)", machine.id, "enabled" if outcome.start_enabled else "BLOCKED", done)
            return done
        except ConnectorError as e:
            msg = f"interlock not set: {e}"
            log.error("machine %s: %s", machine.id, msg)
            if not outcome.start_enabled:
                self.sink.event(Event(machine.id, "interlock_failed",
                                                f"build could not be blocked on the machine: {e}",
                                                time.time_ns(), "alarm", {"file": outcome.file}))
            return msg

    def _record(self, machine: MachineConfig, outcome: CheckOutcome, kind: str = "build_file_check") -> None:
        why = outcome.reasons + [f"server: {r}" for r in (outcome.server_reasons or [])]
        message = (f"build file {Path(outcome.file).name}: {outcome.verdict}, "
                   f"{'cleared to build' if outcome.start_enabled else 'BUILD BLOCKED'}: " + "; ".join(why))
        fields = {"file": outcome.file, "verdict": outcome.verdict, "allowed": outcome.allowed,
                  "start_enabled": outcome.start_enabled, "sha256": outcome.sha256,
                  "design_iteration": outcome.design_iteration, "interlock": outcome.interlock}
        self.sink.event(Event(machine.id, kind, message[:2000], time.time_ns(),
                                    "info" if outcome.start_enabled else "alarm", fields))
