"""OPC UA connector: subscriptions per machine, source timestamps and status kept, reconnect with gap events.

One supervisor task per machine runs: connect → resolve addresses → read identity → create the
subscription (monitored items in batches) → deliver notifications until the session dies, then
records the outage and reconnects with the shared Backoff. Notifications go, one Ingest per
publish response and in arrival order, to the sink from one delivery task (sink.submit blocks on
fsync, so it runs in a worker thread while the event loop keeps serving keep-alives).

Duplicates: after a reconnect the server sends every item's current value again, with the source
timestamp it had. Such a point would land on the same InfluxDB point anyway (idempotent), but the
connector also drops a value whose (signal, source timestamp) equals the last one delivered for
that signal, so a reconnect adds no rows to the outbox either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509

from edge.config import MachineConfig, SignalConfig
from edge.connectors.base import Backoff, Connector, ConnectorError
from edge.connectors.opcua.addressing import AddressError, resolve
from edge.connectors.opcua.config import OpcUaConfig
from edge.readings import Event, Ingest, OutboxFull, Reading, ReadingSink
from edge.values import coerce, describe

log = logging.getLogger(__name__)

IDENTITY_FIELDS = {
    "manufacturer": "Manufacturer",
    "model": "Model",
    "serial_number": "SerialNumber",
    "software_revision": "SoftwareRevision",
    "hardware_revision": "HardwareRevision",
}
_IDENTITY_HANDLE_BASE = 1_000_000  # client handles of identity items, above any signal handle
# StatusCode info bits of a DataValue whose monitored item queue overflowed (OPC 10000-4, 7.39.1):
# InfoType = DataValue (0x400) and Overflow (0x80).
_OVERFLOW = 0x0480
# Notifications held in memory while the outbox refuses them (back-pressure). OPC UA has no
# acknowledgement to withhold, so past this bound new notifications are dropped and the span is
# recorded as a gap event: memory stays bounded and the loss is never hidden.
MAX_PENDING_NOTIFICATIONS = 20_000

POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_unix_ns(ts: datetime | None) -> int | None:
    """An OPC UA DateTime as Unix nanoseconds (None stays None; the OPC UA 'null' date 1601 too)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    if ts.year <= 1601:
        return None
    d = ts - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000


@dataclass
class OpcUaStats:
    """Counters of one connector (exported as metrics)."""

    value_changes: int = 0  # readings handed to the sink
    notifications: int = 0  # publish responses carrying data
    keepalives: int = 0
    reconnects: int = 0
    gaps: int = 0
    bad_quality: int = 0
    duplicates_dropped: int = 0
    identity_changes: int = 0
    dropped_notifications: int = 0  # dropped past MAX_PENDING_NOTIFICATIONS, each span recorded as a gap
    subscriptions_taken_over: int = 0  # after a lost connection, with the changes queued meanwhile
    queue_overflows: int = 0  # values the server marked with the Overflow bit (it discarded older ones)
    last_publish_ns: int | None = None

    def as_dict(self) -> dict:
        """Plain dict for status pages."""
        return asdict(self)


class _Lost(Exception):
    """The session or subscription died; the message is the cause recorded in the gap."""


class _RawSubscription(Subscription):
    """A subscription whose publish responses go straight to the connector (no per-item tasks, order kept)."""

    def __init__(self, session, params, on_publish):
        super().__init__(session, params, handler=on_publish)
        self._on_publish = on_publish

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:  # noqa: D102
        self.last_publish_at = time.monotonic()
        self._on_publish(publish_result)


@dataclass
class _Carried:
    """A live subscription kept over a lost connection, for the next session to take over (TransferSubscriptions)."""

    subscription_id: int
    last_seq: int  # the last notification message received: republish asks for the ones after it
    node_ids: dict[int, ua.NodeId]  # handle -> node: taken over only if the server still addresses them so


class OpcUaConnector(Connector):
    """Subscribes to a machine's OPC UA server and hands every value change to the sink, surviving faults."""

    type = "opcua"
    reports_changes_only = True

    def __init__(self, machine: MachineConfig, sink: ReadingSink, *, agent_id: str = "edge"):
        super().__init__(machine, sink)
        if not isinstance(machine.connection, OpcUaConfig):
            raise ConnectorError(f"machine {machine.id}: connection type is not opcua")
        self.config: OpcUaConfig = machine.connection
        self.agent_id = agent_id
        self.stats = OpcUaStats()
        self.identity: dict[str, str] = {}
        self.identity_history: list[dict[str, str]] = []
        self._signals: list[SignalConfig] = list(machine.signals)
        self._last_ts: dict[str, int | None] = {}
        self._client: Client | None = None
        self._namespaces: list[str] = []
        self._interlock_node: ua.NodeId | None = None
        self._interlock_method: tuple[ua.NodeId, ua.NodeId] | None = None
        # What the agent last decided about the start (blocked until a build file is checked and cleared);
        # written again on every (re)connection, because a machine restarts with its own default.
        self.desired_start_enabled = False
        self._identity_nodes: dict[str, ua.NodeId] = {}
        self._supervisor: asyncio.Task | None = None
        self._delivery: asyncio.Task | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._dropping_since: int | None = None
        self._subscription_id: int | None = None
        self._last_seq = 0
        self._monitored_nodes: dict[int, ua.NodeId] = {}
        self._carried: _Carried | None = None
        self._taken_over: dict | None = None  # what the last take-over recovered, for the gap event
        # The gap of a take-over, told once the server publishes on the taken subscription (start, end, cause, how).
        self._gap_pending: tuple[int, int, str, dict] | None = None
        self._takeover_works = True  # False after a server accepted a take-over and then never published
        self._interlock_handles: set[int] = set()  # monitored items on the interlock node (machine overrides)
        self._interlock_check: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._lost: asyncio.Future | None = None
        self._last_alive_ns: int | None = None
        # Agent state kept with the data (issue 18): when this machine's data last arrived. After a restart of
        # the agent, the time it was not running is a gap of this machine's record like any outage.
        self._alive_key = f"opcua:{machine.id}:alive"
        saved = sink.saved_state(self._alive_key).get(self._alive_key)
        self._alive_before_start: int | None = int(saved) if saved else None
        self._link_key = f"opcua_link:{machine.id}"
        self._last_alive_mono = 0.0
        self._subscribed = asyncio.Event()
        self._delivered = asyncio.Condition()
        self._sink_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.state.detail = {"endpoint": self.config.endpoint}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor and delivery tasks; returns at once (connecting happens in the background)."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._delivery = asyncio.create_task(self._deliver_loop(), name=f"opcua-deliver-{self.machine.id}")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"opcua-{self.machine.id}")

    async def stop(self) -> None:
        """Stop: close the session, hand what was already received to the sink, end the tasks."""
        self._stopping.set()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("connector stopped")
        if self._supervisor is not None:
            try:
                await asyncio.wait_for(self._supervisor, self.config.timeout_s + 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._supervisor.cancel()
            self._supervisor = None
        if self._delivery is not None:
            await self._queue.put(None)  # what was received before stop is still delivered
            try:
                await asyncio.wait_for(self._delivery, 30)
            except asyncio.TimeoutError:
                log.error("%s: sink did not take %d pending notifications at stop", self.machine.id, self._queue.qsize())
                self._delivery.cancel()
            self._delivery = None

    async def wait_subscribed(self, timeout: float) -> None:
        """Wait until a subscription is live (tests, agent start-up)."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def wait_delivered(self, timeout: float) -> None:
        """Wait until every notification received so far has been handed to the sink."""
        async def idle():
            async with self._delivered:
                await self._delivered.wait_for(lambda: self._queue.empty() and not self._busy)
        await asyncio.wait_for(idle(), timeout)

    _busy = False

    # --- supervisor ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = Backoff(initial_s=self.config.reconnect_initial_s, maximum_s=self.config.reconnect_max_s)
        outage_start: int | None = None  # set from losing a live subscription until one is live again
        cause = ""
        attempts = 0
        while not self._stopping.is_set():
            was_live = False

            async def on_live() -> None:
                nonlocal was_live, outage_start
                was_live = True
                backoff.reset()
                await self._on_live(outage_start, cause)
                outage_start = None

            attempts += 1
            try:
                await self._session(on_live)
                reason = "session ended"
            except (_Lost, ConnectorError) as e:
                reason = str(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a library error we did not foresee: still reconnect, never die
                reason = describe_error(e, self.config)
                log.debug("%s: session error", self.machine.id, exc_info=True)
            finally:
                if (was_live and self._takeover_works and self._gap_pending is None and not self._stopping.is_set()
                        and self._subscription_id is not None):
                    # The server keeps a subscription past its client's connection (until the lifetime ends):
                    # leave it there, without closing the session, for the next session to take over.
                    self._carried = _Carried(self._subscription_id, self._last_seq, dict(self._monitored_nodes))
                await self._close_client(keep_session=self._carried is not None and not self._stopping.is_set())
            if self._stopping.is_set():
                break
            self.state.connected = False
            self.state.last_error = reason
            self._subscribed.clear()
            if was_live:
                # The gap starts at the last moment we know the server was sending (data or keep-alive).
                outage_start = self._last_alive_ns or time.time_ns()
                if self._gap_pending is not None:
                    # Taken over, but the server never published on it: the outage never ended, and this
                    # server cannot take a subscription over; the next session subscribes afresh.
                    outage_start, self._gap_pending, self._takeover_works = self._gap_pending[0], None, False
                    self._carried = None
                    log.warning("%s: the server accepted the subscription's take-over but never published on it; "
                                "subscribing afresh from now on", self.machine.id)
                cause = reason
                log.warning("%s: connection lost: %s", self.machine.id, reason)
                lost = Event(self.machine.id, "connection_lost", f"OPC UA connection lost: {reason}",
                             time.time_ns(), "warning", {"cause": reason, "endpoint": self.config.endpoint})
                await self._durably(self.sink.open_condition, self._link_key, lost)
            elif attempts == 1 or log.isEnabledFor(logging.DEBUG):
                log.warning("%s: cannot connect: %s (retrying)", self.machine.id, reason)
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
            except asyncio.TimeoutError:
                pass

    async def _on_live(self, outage_start: int | None, cause: str) -> None:
        now = time.time_ns()
        self.state.connected = True
        self.state.since_ns = now
        self.state.last_error = None
        self._subscribed.set()
        restarted_at = self._alive_before_start
        if outage_start is None and restarted_at is not None:
            # The first connection since the agent started: an outage may be open from before the restart (its
            # partner is this restoration), and the time the agent was not running is a gap of the record.
            self._alive_before_start = None

            def restored_after_restart(since: int) -> Event:
                return Event(self.machine.id, "connection_restored",
                             f"OPC UA connection restored after {(now - since) / 1e9:.1f} s (the agent restarted "
                             f"meanwhile)", now, "info", {"endpoint": self.config.endpoint, "down_since_ns": since})
            await self._durably(self.sink.close_condition, self._link_key, restored_after_restart)
            await self._gap(restarted_at, now, "the agent was not running", "partial",
                            "the values current at reconnection were read; changes while the agent was down are lost")
            return
        self._alive_before_start = None
        if outage_start is not None:
            self.stats.reconnects += 1
            self.state.reconnects += 1
            secs = (now - outage_start) / 1e9
            log.warning("%s: connection restored after %.1f s (%s)", self.machine.id, secs, cause)

            def restored(since: int) -> Event:
                return Event(self.machine.id, "connection_restored", f"OPC UA connection restored after "
                             f"{(now - since) / 1e9:.1f} s", now, "info",
                             {"endpoint": self.config.endpoint, "down_since_ns": since})
            await self._durably(self.sink.close_condition, self._link_key, restored)
            if self._taken_over is not None:
                # Told when the server first publishes on the subscription: only then is the take-over real.
                self._gap_pending = (outage_start, now, cause, self._taken_over)
                return
            # A new subscription delivers each item's current value, not the changes while it was down:
            # the gap is partly recovered, and the record must say so (the DHR shows this message).
            await self._gap(outage_start, now, cause, "partial",
                            "the server no longer had the subscription (or cannot hand it over); the values current "
                            "at reconnection were read, changes during the outage are lost")

    async def _gap(self, start: int, end: int, cause: str, recovery: str, how: str) -> None:
        """Record an outage and what of it was recovered (the DHR shows this message)."""
        self.stats.gaps += 1
        await self._event(Event(self.machine.id, "gap", f"no data from {self.machine.id} for {(end - start) / 1e9:.1f} "
                                f"s: {cause}; recovery {recovery}: {how}", end,
                                "info" if recovery == "full" else "warning",
                                {"start_ns": start, "end_ns": end, "cause": cause, "recovery": recovery}))

    def _taken_over_gap(self) -> None:
        """The server published on a taken-over subscription: tell the gap and what was recovered."""
        start, end, cause, taken = self._gap_pending
        self._gap_pending = None
        if taken["missing"]:
            recovery, how = "partial", (f"the subscription was taken over, but {len(taken['missing'])} notification "
                                        f"message(s) were no longer on the server and are lost")
        else:
            # The server kept the subscription: its queues held the changes made meanwhile, and the messages
            # lost in flight were sent again (Republish). Only a queue that overflowed loses values, and its
            # values say so (Overflow bit, reported as a gap of their own).
            recovery, how = "full", (f"the subscription was taken over (TransferSubscriptions), "
                                     f"{taken['republished']} notification message(s) republished, and the changes "
                                     f"queued on the server during the outage delivered with their source times")
        task = asyncio.get_running_loop().create_task(self._gap(start, end, cause, recovery, how))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, on_live) -> None:
        cfg = self.config
        client = await self._connect()
        self._client = client
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        lost = self._lost

        async def on_connection_lost(exc: Exception) -> None:
            if not lost.done():
                lost.set_result(f"connection to {cfg.endpoint} lost: {exc or type(exc).__name__}")

        client.connection_lost_callback = on_connection_lost
        self._namespaces = await client.get_namespace_array()
        monitored = await self._resolve_signals(client)
        await self._resolve_interlock(client)
        await self._assert_interlock(client)
        await self._read_identity(client)
        carried, self._taken_over = self._carried, None
        if carried is not None:
            self._carried = None
            if carried.node_ids == {h: nid for h, nid, _ in monitored}:
                self._taken_over = await self._take_over(client, carried)
        if self._taken_over is None:
            await self._subscribe(client, monitored)
        # Submit identity after the subscription is live so its event does not delay the first data.
        self._last_alive_mono = time.monotonic()
        self._last_alive_ns = time.time_ns()
        await on_live()
        watchdog = asyncio.create_task(self._watchdog(lost))
        try:
            waiter = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({lost, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if lost.done() and not self._stopping.is_set():
                raise _Lost(lost.result())
        finally:
            watchdog.cancel()

    async def _watchdog(self, lost: asyncio.Future) -> None:
        """Declare the session dead when no publish response (data or keep-alive) came for watchdog_s."""
        limit = self._watchdog_limit
        while not lost.done():
            await asyncio.sleep(min(1.0, limit / 4))
            silent = time.monotonic() - self._last_alive_mono
            if silent > limit and not lost.done():
                lost.set_result(f"no data or keep-alive from {self.config.endpoint} for {silent:.1f} s (watchdog)")

    async def _connect(self) -> Client:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=max(0.5, min(5.0, cfg.watchdog_s / 4)))
        client.name = f"amtrace edge {self.agent_id}"
        client.description = client.name
        client.application_uri = f"urn:amtrace:edge:{self.agent_id}"
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        sec = cfg.security
        if cfg.username:
            client.set_user(cfg.username)
            if cfg.password_env:
                password = os.environ.get(cfg.password_env)
                if password is None:
                    raise ConnectorError(f"{cfg.endpoint}: environment variable {cfg.password_env} (password_env) is not set")
                client.set_password(password)
        try:
            if sec.mode != "None":
                await self._secure(client)
            await asyncio.wait_for(client.connect(), cfg.timeout_s)
        except ConnectorError:
            raise
        except Exception as e:
            await self._close(client)
            raise ConnectorError(describe_error(e, cfg)) from None
        return client

    async def _secure(self, client: Client) -> None:
        """Check the server offers the configured mode and policy and presents the trusted certificate, then set it."""
        cfg, sec = self.config, self.config.security
        if not sec.server_certificate:
            raise ConnectorError(
                f"{cfg.endpoint}: security mode {sec.mode} needs security.server_certificate: the agent only "
                f"trusts a server certificate configured explicitly (fetch it with: opcua fetch-cert {cfg.endpoint})"
            )
        try:
            trusted = uacrypto.der_from_x509(await uacrypto.load_certificate(sec.server_certificate))
            own = await uacrypto.load_certificate(sec.client_certificate)
        except FileNotFoundError as e:
            raise ConnectorError(f"{cfg.endpoint}: certificate file not found: {e.filename}") from None
        uris = own.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        if uris:
            client.application_uri = uris[0]  # servers check the application URI against the certificate
        probe = Client(cfg.endpoint, timeout=cfg.timeout_s)
        try:
            endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), cfg.timeout_s)
        except Exception as e:
            raise ConnectorError(describe_error(e, cfg)) from None
        policy_uri = POLICIES[sec.policy].URI
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        match = [e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == mode]
        if not match:
            offered = sorted({f"{e.SecurityMode.name.rstrip('_')}/{e.SecurityPolicyUri.rpartition('#')[2]}" for e in endpoints})
            raise ConnectorError(
                f"{cfg.endpoint}: the server offers no endpoint with security {sec.mode}/{sec.policy}; "
                f"it offers: {', '.join(offered)}"
            )
        presented = _first_cert(match[0].ServerCertificate)
        if presented != trusted:
            raise ConnectorError(
                f"{cfg.endpoint}: the server certificate is not trusted: it presents {fingerprint(presented)} but "
                f"security.server_certificate ({sec.server_certificate}) is {fingerprint(trusted)}"
            )
        try:
            await client.set_security(
                POLICIES[sec.policy], sec.client_certificate, sec.client_private_key,
                server_certificate=sec.server_certificate, mode=mode,
            )
        except FileNotFoundError as e:
            raise ConnectorError(f"{cfg.endpoint}: certificate or key file not found: {e.filename}") from None

    async def _close_client(self, *, keep_session: bool = False) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._close(client, keep_session=keep_session)

    async def _close(self, client: Client, *, keep_session: bool = False) -> None:
        if not keep_session:
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except Exception:
                pass
        try:
            client.disconnect_socket()
            session = client.uaclient.session
            for task in (client._supervisor_task, client._stale_watchdog_task, client._renew_channel_task,
                         getattr(session, "_publish_task", None)):
                if task is not None:
                    task.cancel()
        except Exception:
            pass

    async def _take_over(self, client: Client, carried: _Carried) -> dict | None:
        """Take the lost session's subscription over (TransferSubscriptions) and have the messages sent in
        the outage sent again (Republish); None when the server no longer has it (restarted, lifetime over)."""
        session = client.uaclient.session
        try:
            [result] = await session.transfer_subscriptions(ua.TransferSubscriptionsParameters(
                SubscriptionIds=[carried.subscription_id], SendInitialValues=False))
        except Exception as e:  # noqa: BLE001 - a server without the service: subscribe afresh
            log.info("%s: subscription %s not taken over: %s", self.machine.id, carried.subscription_id, e)
            return None
        if not result.StatusCode.is_good():
            log.info("%s: subscription %s not taken over: %s", self.machine.id, carried.subscription_id,
                     result.StatusCode.name)
            return None
        self._subscription_id, self._last_seq = carried.subscription_id, carried.last_seq
        self._monitored_nodes = dict(carried.node_ids)
        self._interlock_handles = {h for h, nid in self._monitored_nodes.items() if nid == self._interlock_node}
        # asyncua's session hands publish responses to the callback registered for the subscription id.
        session._subscription_callbacks[carried.subscription_id] = self._on_publish
        republished, missing = 0, []
        for seq in sorted(n for n in (result.AvailableSequenceNumbers or []) if n > carried.last_seq):
            try:
                message = await session.republish(carried.subscription_id, seq)
            except Exception:  # noqa: BLE001 - BadMessageNotAvailable: gone from the server's queue
                missing.append(seq)
                continue
            if message.NotificationData:
                self._on_publish(ua.PublishResult(SubscriptionId=carried.subscription_id, NotificationMessage=message))
                republished += 1
        session.ensure_publish_loop()
        self.stats.subscriptions_taken_over += 1
        log.info("%s: subscription %s taken over, %d message(s) republished", self.machine.id,
                 carried.subscription_id, republished)
        return {"republished": republished, "missing": missing}

    # --- addressing and subscription ----------------------------------------------------

    async def _resolve_signals(self, client: Client) -> list[tuple[int, ua.NodeId, SignalConfig]]:
        out, problems = [], []
        for handle, sig in enumerate(self._signals):
            src = sig.source
            try:
                if src.node_id is not None:
                    nid = await resolve(client, src.node_id, self._namespaces, kind="node_id")
                else:
                    nid = await resolve(client, src.browse_path, self._namespaces, kind="browse_path")
            except AddressError as e:
                problems.append(f"{sig.name}: {e}")
                continue
            out.append((handle, nid, sig))
        self.state.detail["unresolved"] = problems
        for p in problems:
            log.error("%s: signal not found on the server: %s", self.machine.id, p)
            await self._event(Event(self.machine.id, "signal_unresolved", p, time.time_ns(), "alarm"))
        if not out:
            raise ConnectorError(f"{self.config.endpoint}: none of the {len(self._signals)} signals resolved ({problems[0]})")
        return out

    async def _resolve_interlock(self, client: Client) -> None:
        il = self.config.interlock
        self._interlock_node = self._interlock_method = None
        if il is None:
            return
        try:
            if il.node:
                self._interlock_node = await resolve(client, il.node, self._namespaces)
            if il.method:
                method = await resolve(client, il.method, self._namespaces)
                obj = await resolve(client, il.method_object, self._namespaces) if il.method_object else None
                if obj is None:
                    obj = (await client.get_node(method).get_parent()).nodeid
                self._interlock_method = (obj, method)
        except AddressError as e:
            self.state.detail["interlock_error"] = str(e)
            log.error("%s: interlock not found: %s", self.machine.id, e)

    async def _subscribe(self, client: Client, monitored: list[tuple[int, ua.NodeId, SignalConfig]]) -> None:
        cfg = self.config
        interval = float(cfg.publishing_interval_ms)
        keepalive = max(1, math.ceil(cfg.watchdog_s * 1000 / 3 / interval))  # ~3 keep-alives per watchdog period
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            # As long as the session: the server keeps the subscription (and queues changes) through an outage
            # that long, for the next session to take over.
            RequestedLifetimeCount=max(keepalive * 4, math.ceil(cfg.session_timeout_s * 1000 / interval)),
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = _RawSubscription(client.uaclient.session, params, self._on_publish)
        result = await sub.init()
        # A server may revise interval and keep-alive count upwards: never call a session dead before
        # it was due to send at least one keep-alive.
        self._watchdog_limit = max(cfg.watchdog_s, 1.5 * result.RevisedPublishingInterval / 1000
                                   * max(1, result.RevisedMaxKeepAliveCount))
        self._subscription_id, self._last_seq = result.SubscriptionId, 0
        self._monitored_nodes = {handle: nid for handle, nid, _ in monitored}
        self._interlock_handles = {h for h, nid in self._monitored_nodes.items() if nid == self._interlock_node}
        self.state.detail.update(subscription_id=result.SubscriptionId,
                                 publishing_interval_ms=result.RevisedPublishingInterval,
                                 keepalive_count=result.RevisedMaxKeepAliveCount)
        requests = []
        for handle, nid, sig in monitored:
            src = sig.source
            requests.append(self._item(handle, nid, src.sampling_interval_ms, src.queue_size, src.deadband))
        for i, (field_name, nid) in enumerate(self._identity_nodes.items()):
            requests.append(self._item(_IDENTITY_HANDLE_BASE + i, nid, 0, 1, None))
        self._identity_handles = {_IDENTITY_HANDLE_BASE + i: f for i, f in enumerate(self._identity_nodes)}
        failed = []
        for start in range(0, len(requests), cfg.register_batch_size):
            batch = requests[start:start + cfg.register_batch_size]
            res = await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
                SubscriptionId=result.SubscriptionId, ItemsToCreate=batch,
                TimestampsToReturn=ua.TimestampsToReturn.Both))
            for req, r in zip(batch, res):
                if not r.StatusCode.is_good():
                    h = req.RequestedParameters.ClientHandle
                    name = self._signals[h].name if h < _IDENTITY_HANDLE_BASE else self._identity_handles[h]
                    failed.append(f"{name}: {r.StatusCode.name}")
        self.state.detail["monitored_items"] = len(requests) - len(failed)
        for f in failed:
            log.error("%s: monitored item refused: %s", self.machine.id, f)
            await self._event(Event(self.machine.id, "signal_unresolved", f"monitored item refused: {f}",
                                    time.time_ns(), "alarm"))

    @staticmethod
    def _item(handle: int, nid: ua.NodeId, sampling_ms: float, queue: int, deadband: float | None):
        flt = None
        if deadband:
            flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                      DeadbandType=ua.DeadbandType.Absolute, DeadbandValue=float(deadband))
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=handle, SamplingInterval=float(sampling_ms), Filter=flt, QueueSize=queue,
                DiscardOldest=True),
        )

    _identity_handles: dict[int, str] = {}
    _watchdog_limit: float = 10.0

    # --- notifications ------------------------------------------------------------------

    def _on_publish(self, result: ua.PublishResult) -> None:
        received = time.time_ns()
        self._last_alive_mono = time.monotonic()
        self._last_alive_ns = received
        self.stats.last_publish_ns = received
        if self._gap_pending is not None:
            self._taken_over_gap()
        data = result.NotificationMessage.NotificationData
        if not data:
            self.stats.keepalives += 1
            return
        self._last_seq = max(self._last_seq, result.NotificationMessage.SequenceNumber)
        for notif in data:
            if isinstance(notif, ua.StatusChangeNotification):
                # The server tells us the subscription ended (e.g. BadTimeout, BadShutdown).
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(f"subscription status changed to {notif.Status.name}")
        self.stats.notifications += 1
        if self._queue.qsize() >= MAX_PENDING_NOTIFICATIONS:
            self.stats.dropped_notifications += 1
            if self._dropping_since is None:
                self._dropping_since = received
                log.error("%s: %d notifications pending (outbox refusing): dropping new ones until it drains",
                          self.machine.id, MAX_PENDING_NOTIFICATIONS)
            return
        if self._dropping_since is not None:
            start, self._dropping_since = self._dropping_since, None
            task = asyncio.get_running_loop().create_task(self._event(Event(
                self.machine.id, "gap", "value changes dropped while the outbox refused data (back-pressure); "
                "recovery none: they are lost", received, "alarm",
                {"start_ns": start, "end_ns": received, "cause": "outbox full", "recovery": "none"})))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._queue.put_nowait((data, received))

    async def _deliver_loop(self) -> None:
        stop_after = False
        while not stop_after:
            item = await self._queue.get()
            batch = []
            while item is not None:
                ingest = self._to_ingest(*item)
                if ingest is not None:
                    batch.append(ingest)
                if self._queue.empty() or len(batch) >= 64:
                    break
                item = self._queue.get_nowait()
            stop_after = item is None
            self._busy = True
            if batch:
                await self._submit(batch)
            self._busy = False
            async with self._delivered:
                self._delivered.notify_all()

    async def _submit(self, batch: list[Ingest]) -> None:
        wait = 0.1
        while True:
            try:
                alive = max(i.received_ns for i in batch)
                async with self._sink_lock:
                    await asyncio.to_thread(self.sink.submit, batch, state={self._alive_key: str(alive)})
                self.stats.value_changes += sum(len(i.readings) for i in batch)
                return
            except OutboxFull:
                log.warning("%s: outbox full, holding %d notifications", self.machine.id, len(batch))
            except Exception:
                log.exception("%s: sink refused a batch; retrying", self.machine.id)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)

    def _to_ingest(self, data, received: int) -> Ingest | None:
        readings: list[Reading] = []
        signals = self._signals
        last = self._last_ts
        for notif in data:
            if not isinstance(notif, ua.DataChangeNotification):
                continue
            for item in notif.MonitoredItems:
                h = item.ClientHandle
                dv = item.Value
                if h >= _IDENTITY_HANDLE_BASE:
                    self._identity_update(self._identity_handles.get(h), dv)
                    continue
                sig = signals[h]
                if h in self._interlock_handles and dv.Value is not None and dv.Value.Value is True \
                        and not self.desired_start_enabled:
                    self._check_interlock()
                ts = to_unix_ns(dv.SourceTimestamp) or to_unix_ns(dv.ServerTimestamp)
                if dv.StatusCode is not None and dv.StatusCode.value & _OVERFLOW == _OVERFLOW:
                    self._overflowed(sig, ts or received)
                if ts is not None and last.get(sig.name) == ts:
                    self.stats.duplicates_dropped += 1
                    continue
                last[sig.name] = ts
                readings.append(self._reading(sig, dv, ts))
        if not readings:
            return None
        return Ingest(self.machine.id, readings, received, self.config.endpoint)

    def _overflowed(self, sig: SignalConfig, ts: int) -> None:
        """The server's queue for a signal overflowed: it discarded changes older than this value."""
        self.stats.queue_overflows += 1
        task = asyncio.get_running_loop().create_task(self._event(Event(
            self.machine.id, "gap", f"{sig.name}: the server's queue overflowed (queue_size {sig.source.queue_size}); "
            f"changes before {datetime.fromtimestamp(ts / 1e9, timezone.utc).isoformat()} were discarded by the server; recovery none: they are lost", ts,
            "warning", {"signal": sig.name, "end_ns": ts, "cause": "server queue overflow", "recovery": "none"})))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reading(self, sig: SignalConfig, dv: ua.DataValue, ts: int | None) -> Reading:
        code = dv.StatusCode
        raw = dv.Value.Value if dv.Value is not None else None
        if code is not None and code.is_bad():
            self.stats.bad_quality += 1
            return Reading(sig.name, None, ts, "bad", code.name)
        quality, status = ("uncertain", code.name) if code is not None and code.is_uncertain() else ("good", None)
        if raw is None:
            self.stats.bad_quality += 1
            return Reading(sig.name, None, ts, "bad", status or "BadNoValue")
        try:
            value = _coerce(raw, sig.type)
        except (TypeError, ValueError):
            self.stats.bad_quality += 1
            return Reading(sig.name, None, ts, "bad", f"BadTypeMismatch: {describe(raw)} is not {sig.type}")
        return Reading(sig.name, value, ts, quality, status)

    # --- identity -----------------------------------------------------------------------

    async def _read_identity(self, client: Client) -> None:
        self._identity_nodes = await self._find_identity_nodes(client)
        ident: dict[str, str] = {}
        if self._identity_nodes:
            values = await client.read_values([client.get_node(n) for n in self._identity_nodes.values()])
            ident = {f: _text(v) for f, v in zip(self._identity_nodes, values) if _text(v)}
        missing = [IDENTITY_FIELDS[f] for f in ("manufacturer", "serial_number") if not ident.get(f)]
        if missing:
            # Nothing can be reported: a software change on this machine would trigger no requalification.
            self.state.detail["identity"] = "unknown"
            msg = (f"identity unknown: requalification triggers are blind (machine {self.machine.id} offers no "
                   f"{' or '.join(missing)})")
            log.error("%s: %s", self.machine.id, msg)
            await self._event(Event(self.machine.id, "identity_unknown", msg, time.time_ns(), "alarm",
                                    {"missing": ",".join(missing)}))
            return
        absent = [IDENTITY_FIELDS[f] for f in IDENTITY_FIELDS if f not in ident]
        self.state.detail["identity"] = "incomplete" if absent else "complete"
        if absent:
            blind = " (software changes cannot trigger requalification)" if "SoftwareRevision" in absent else ""
            await self._event(Event(self.machine.id, "identity_incomplete",
                                    f"machine {self.machine.id} does not offer {', '.join(absent)}{blind}",
                                    time.time_ns(), "alarm" if blind else "info", {"absent": ",".join(absent)}))
        old = dict(self.identity)
        self.identity = ident
        self.identity_history.append(dict(ident))
        now = time.time_ns()
        await self._event(Event(self.machine.id, "identity",
                                f"{ident.get('manufacturer')} {ident.get('model')} serial {ident.get('serial_number')}, "
                                f"software {ident.get('software_revision')}, hardware {ident.get('hardware_revision')}",
                                now, "info", dict(ident)))
        if old and old != ident:
            await self._identity_changed(old, ident, now)

    async def _find_identity_nodes(self, client: Client) -> dict[str, ua.NodeId]:
        """The configured identity nodes, else the Identification of the OPC 40001-1 machine with our serial."""
        mapped = self.config.identity_nodes
        found: dict[str, ua.NodeId] = {}
        if mapped is not None:
            for f in IDENTITY_FIELDS:
                addr = getattr(mapped, f)
                if addr:
                    try:
                        found[f] = await resolve(client, addr, self._namespaces)
                    except AddressError as e:
                        log.error("%s: identity node %s: %s", self.machine.id, f, e)
            return found
        objects = client.nodes.objects
        machines = [c for c in await objects.get_children_descriptions() if c.BrowseName.Name == "Machines"]
        candidates = []
        for folder in machines:
            for m in await client.get_node(folder.NodeId).get_children_descriptions():
                for c in await client.get_node(m.NodeId).get_children_descriptions():
                    if c.BrowseName.Name == "Identification":
                        props = {p.BrowseName.Name: p.NodeId for p in
                                 await client.get_node(c.NodeId).get_children_descriptions()}
                        candidates.append({f: props[n] for f, n in IDENTITY_FIELDS.items() if n in props})
        if len(candidates) > 1:
            sns = await client.read_values([client.get_node(c["serial_number"]) for c in candidates
                                            if "serial_number" in c])
            for c, sn in zip([c for c in candidates if "serial_number" in c], sns):
                if _text(sn) == self.machine.serial:
                    return c
        return candidates[0] if candidates else {}

    def _identity_update(self, field_name: str | None, dv: ua.DataValue) -> None:
        if field_name is None or dv.Value is None or not (dv.StatusCode is None or dv.StatusCode.is_good()):
            return
        value = _text(dv.Value.Value)
        if self.identity.get(field_name) == value:
            return
        old = dict(self.identity)
        self.identity = {**self.identity, field_name: value}
        self.identity_history.append(dict(self.identity))
        task = asyncio.get_running_loop().create_task(self._identity_changed(old, self.identity, time.time_ns()))
        self._tasks.add(task)  # keep a reference until done, or the event could be garbage-collected unsent
        task.add_done_callback(self._tasks.discard)

    async def _identity_changed(self, old: dict, new: dict, ts_ns: int) -> None:
        self.stats.identity_changes += 1
        changed = [f for f in IDENTITY_FIELDS if old.get(f) != new.get(f)]
        fields: dict[str, Any] = {}
        for f in changed:
            fields[f"old_{f}"] = old.get(f) or ""
            fields[f"new_{f}"] = new.get(f) or ""
        fields["changed"] = ",".join(changed)
        sw = "software_revision" in changed
        msg = (f"software revision changed from {old.get('software_revision')} to {new.get('software_revision')}: "
               f"requalification required" if sw else f"machine identity changed: {', '.join(changed)}")
        log.warning("%s: %s", self.machine.id, msg)
        await self._event(Event(self.machine.id, "identity_changed", msg, ts_ns, "alarm" if sw else "warning", fields))

    # --- interlock ----------------------------------------------------------------------

    async def set_start_enabled(self, enabled: bool, *, reason: str) -> str:
        """Write the interlock node (and read it back) or call the interlock method; log and record the result."""
        cfg = self.config
        mid = self.machine.id
        if cfg.interlock is None:
            raise ConnectorError(f"machine {mid} has no interlock configured (connection.interlock)")
        self.desired_start_enabled = bool(enabled)  # kept even if this write fails: re-asserted on reconnection
        client = self._client
        if client is None or not self.state.connected:
            raise ConnectorError(f"machine {mid}: cannot set start enabled={enabled}: not connected to {cfg.endpoint}")
        try:
            done = await self._write_interlock(client, bool(enabled))
        except ConnectorError as e:
            log.error("%s; reason: %s", e, reason)
            await self._event(Event(mid, "interlock", f"{e}; reason: {reason}", time.time_ns(), "alarm",
                                    {"enabled": bool(enabled), "ok": False, "reason": reason}))
            raise
        done = f"{done}; reason: {reason}"
        log.warning("%s", done)
        await self._event(Event(mid, "interlock", done, time.time_ns(), "warning" if not enabled else "info",
                                {"enabled": bool(enabled), "ok": True, "reason": reason}))
        return done

    async def _write_interlock(self, client: Client, enabled: bool) -> str:
        """Write the interlock and read it back (node) or call the method; ConnectorError saying why if not."""
        cfg, mid = self.config, self.machine.id
        wanted = "true" if enabled else "false"
        try:
            if self._interlock_node is not None:
                node = client.get_node(self._interlock_node)
                await node.write_value(ua.DataValue(ua.Variant(enabled, ua.VariantType.Boolean)))
                back = await node.read_value()
                if bool(back) != enabled:
                    raise ConnectorError(f"machine {mid}: wrote start enabled={wanted} but read back {back!r}")
                return f"machine {mid}: start enabled set to {wanted} ({cfg.interlock.node}, read back {str(back).lower()})"
            if self._interlock_method is not None:
                obj, method = self._interlock_method
                await client.get_node(obj).call_method(method, ua.Variant(enabled, ua.VariantType.Boolean))
                return f"machine {mid}: start enabled set to {wanted} (method {cfg.interlock.method} accepted)"
            raise ConnectorError(f"machine {mid}: interlock not found on the server "
                                 f"({self.state.detail.get('interlock_error', 'not resolved')})")
        except ConnectorError:
            raise
        except Exception as e:
            why = (f"{cfg.endpoint}: the server answered {type(e).__name__}" if isinstance(e, ua.UaStatusCodeError)
                   else describe_error(e, cfg))
            raise ConnectorError(f"machine {mid}: setting start enabled={wanted} was refused: {why}") from None

    def _check_interlock(self) -> None:
        """The machine reported StartEnabled = true while the agent's decision is false: check it (once at a time)."""
        if self._interlock_check is None or self._interlock_check.done():
            self._interlock_check = asyncio.get_running_loop().create_task(self._interlock_overridden())

    async def _interlock_overridden(self) -> None:
        """Read the interlock now: a stale notification (from before the agent's own write) reads false and is
        let go; a machine that enabled its start by itself (HMI, its own program) is blocked again, with an alarm."""
        client, mid = self._client, self.machine.id
        if client is None or self._interlock_node is None or self.desired_start_enabled:
            return
        try:
            if not bool(await client.get_node(self._interlock_node).read_value()) or self.desired_start_enabled:
                return
            done = await self._write_interlock(client, False)
        except Exception as e:  # noqa: BLE001 - said in the alarm; the reconnection re-asserts it
            await self._event(Event(mid, "interlock", f"machine {mid} enabled its start by itself while the agent's "
                                    f"decision is false, and the agent could not block it again: {e}",
                                    time.time_ns(), "alarm", {"enabled": False, "found": True, "ok": False,
                                                              "reason": "machine override"}))
            return
        msg = f"machine {mid} enabled its start by itself while the agent's decision is false: {done}"
        log.error("%s", msg)
        await self._event(Event(mid, "interlock", msg, time.time_ns(), "alarm",
                                {"enabled": False, "found": True, "ok": True, "reason": "machine override"}))

    async def _assert_interlock(self, client: Client) -> None:
        """On every (re)connection: the machine gets the agent's current decision, whatever it restarted with.

        A machine that restarted comes back with its default (often StartEnabled = true) while the release
        gate may refuse; the agent only wrote on changes, so the start stayed enabled. A machine found in
        another state than the agent's decision is an alarm; so is a write that fails or does not read back."""
        if self.config.interlock is None:
            return
        mid, wanted = self.machine.id, self.desired_start_enabled
        found = None
        if self._interlock_node is not None:
            try:
                found = bool(await client.get_node(self._interlock_node).read_value())
            except Exception as e:  # noqa: BLE001 - the write below says what is wrong
                log.debug("%s: interlock read failed: %s", mid, e)
        try:
            done = await self._write_interlock(client, wanted)
        except ConnectorError as e:
            log.error("%s; on connection", e)
            await self._event(Event(mid, "interlock", f"{e}; on (re)connection the agent could not set its decision",
                                    time.time_ns(), "alarm", {"enabled": wanted, "ok": False,
                                                              "reason": "reconnection"}))
            return
        if found is not None and found != wanted:
            how = "came back with" if self.state.since_ns is not None else "was found with"
            msg = (f"machine {mid} {how} start enabled={str(found).lower()} while the agent's decision "
                   f"is {str(wanted).lower()}: {done} on (re)connection")
            log.error("%s", msg)
            await self._event(Event(mid, "interlock", msg, time.time_ns(), "alarm",
                                    {"enabled": wanted, "found": found, "ok": True, "reason": "reconnection"}))
        else:
            await self._event(Event(mid, "interlock", f"{done} on (re)connection", time.time_ns(), "info",
                                    {"enabled": wanted, "ok": True, "reason": "reconnection"}))

    # --- helpers ------------------------------------------------------------------------

    async def _event(self, event: Event) -> None:
        await self._durably(self.sink.event, event)

    async def _durably(self, store, *args) -> None:
        """Store an event (or a condition) through the sink, off the event loop; a failure is logged."""
        try:
            async with self._sink_lock:
                await asyncio.to_thread(store, *args)
        except Exception:
            log.exception("%s: could not record %s", self.machine.id, getattr(args[-1], "kind", "an event"))


def _coerce(raw: Any, type_: str):
    """OPC UA's own types first (text, time, a Boolean read as a number, a number as a Boolean, numbers in text
    nodes as text), then the one rule every connector follows (edge.values.coerce)."""
    if isinstance(raw, ua.LocalizedText):
        raw = raw.Text
    if type_ == "float" and isinstance(raw, bool):
        raw = 1.0 if raw else 0.0
    elif type_ == "bool" and isinstance(raw, int):
        raw = bool(raw)
    elif type_ == "str" and not isinstance(raw, str):
        raw = raw.isoformat() if isinstance(raw, datetime) else str(raw)
    return coerce(type_, raw)


def _text(v: Any) -> str:
    if isinstance(v, ua.LocalizedText):
        return v.Text or ""
    return "" if v is None else str(v)


def _first_cert(der: bytes | None) -> bytes | None:
    if not der:
        return None
    from asyncua.client.client import _first_cert_from_chain
    return _first_cert_from_chain(der)


def fingerprint(der: bytes | None) -> str:
    """SHA-1 thumbprint of a DER certificate as OPC UA tools show it."""
    if not der:
        return "no certificate"
    import hashlib
    return "SHA1 " + hashlib.sha1(der).hexdigest().upper()


def describe_error(e: BaseException, cfg: OpcUaConfig) -> str:
    """One line an operator can act on, for a library error (no stack trace)."""
    ep = cfg.endpoint
    sec = cfg.security
    if isinstance(e, ConnectorError):
        return str(e)
    if isinstance(e, (ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadIdentityTokenRejected,
                      ua.uaerrors.BadIdentityTokenInvalid)):
        if cfg.username:
            return f"{ep}: login as '{cfg.username}' refused: wrong user name or password ({type(e).__name__})"
        return f"{ep}: anonymous login refused; configure username and password_env ({type(e).__name__})"
    if isinstance(e, (ua.uaerrors.BadCertificateUntrusted, ua.uaerrors.BadSecurityChecksFailed,
                      ua.uaerrors.BadCertificateInvalid, ua.uaerrors.BadCertificateUriInvalid,
                      ua.uaerrors.BadCertificateUseNotAllowed)):
        return (f"{ep}: the server does not trust the client certificate {sec.client_certificate}; add it to the "
                f"server's trusted certificates ({type(e).__name__})")
    if isinstance(e, ua.uaerrors.BadCertificateTimeInvalid):
        return f"{ep}: a certificate has expired or is not valid yet ({type(e).__name__})"
    if isinstance(e, (ua.uaerrors.BadSecurityPolicyRejected, ua.uaerrors.BadSecurityModeRejected)):
        return f"{ep}: the server rejected security {sec.mode}/{sec.policy} ({type(e).__name__})"
    if isinstance(e, ua.UaStatusCodeError):
        return f"{ep}: the server answered {type(e).__name__}"
    if isinstance(e, ConnectionRefusedError):
        return f"cannot reach {ep}: connection refused"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer from {ep} within {cfg.timeout_s:g} s"
    if isinstance(e, ConnectionError):
        return f"connection to {ep} failed: {e}"
    if isinstance(e, OSError):
        return f"cannot reach {ep}: {e.strerror or e}"
    return f"{ep}: {type(e).__name__}: {e}"
