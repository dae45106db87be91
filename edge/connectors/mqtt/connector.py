"""MQTT connector: persistent session, QoS 1, acknowledge a message only once its readings are durable.

Threads (paho is synchronous; the agent's event loop is never blocked by it):
  - paho's network thread (loop_start) reads the socket and calls on_message, which only enqueues;
  - a supervisor thread connects, and after a loss waits base.Backoff before connecting again
    (paho's own reconnect is off, so the one backoff policy of the project applies);
  - a flusher thread collects messages for group_commit_ms, parses them, hands all good ones to
    sink.submit() in one call (one durable transaction), quarantines the malformed ones, and only
    then acknowledges every message, in the order received. All sink calls come from this thread.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.config import MachineConfig
from edge.connectors.base import Backoff, Connector, ConnectorError
from edge.connectors.mqtt.client import connect_kwargs, describe_error, make_client
from edge.connectors.mqtt.payload import MalformedPayload, parse_with_seq, signal_map
from edge.readings import Event, Ingest, OutboxFull, ReadingSink

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us: bounds memory under back-pressure
MAX_BATCH = 1000  # messages per durable transaction
RETRY_S = 0.5  # how often a refused submit (outbox full, sink error) is retried
ISOLATE_AFTER = 3  # refusals of a batch (not disk, not budget) before its messages are stored one by one
COMMAND_TIMEOUT_S = 10.0


@dataclass
class MqttStats:
    """Counters of one MQTT connection, as status and metrics show them."""

    messages_received: int = 0  # every delivery, redeliveries included
    messages_acked: int = 0
    readings: int = 0  # readings handed durably to the sink
    quarantined: int = 0
    pending_unacked: int = 0  # received, not yet acknowledged (and not left for the broker to redeliver)
    backpressure: bool = False
    left_for_redelivery: int = 0  # stored, but the connection they came on is gone: the broker sends them again
    seq_gaps: int = 0  # jumps in a machine's seq (messages the machine says it sent that never arrived)


@dataclass
class _Message:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ns: int
    generation: int
    ingest: Ingest | None = None
    seq: int | None = None
    reason: str | None = None
    quarantined: bool = False


def _now_ns() -> int:
    return time.time_ns()


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


class MqttConnector(Connector):
    """Reads one machine's MQTT snapshots into the sink; acknowledges only what the sink stored."""

    type = "mqtt"

    def __init__(self, machine: MachineConfig, sink: ReadingSink, *, agent_id: str = "edge",
                 group_commit_ms: float = 10.0):
        super().__init__(machine, sink)
        if machine.connection.type != "mqtt":
            raise ConnectorError(f"machine {machine.id}: connection type is {machine.connection.type}, not mqtt")
        self.config = machine.connection
        self.client_id = self.config.client_id or f"amtrace-{agent_id}-{machine.id}"
        self.group_commit_s = max(0.0, group_commit_ms) / 1000.0
        self.subscriptions = signal_map(machine).subscriptions  # ConfigError for an ambiguous map, now
        self.broker = f"{self.config.host}:{self.config.port}"
        self._stats = MqttStats()
        self._lock = threading.Lock()  # guards stats, generation and state changes across threads
        self._inbox: queue.Queue[_Message] = queue.Queue()
        self._events: collections.deque[Event] = collections.deque()
        self._stopping = threading.Event()
        self._lost = threading.Event()
        self._generation = 0  # +1 on every connect and disconnect; a message is acked only in its own
        self._connected_generation = -1
        self._backoff = Backoff()
        self._outage_since_ns: int | None = None
        self._ever_connected = False
        # Agent state kept in the outbox with the data (issue 18), so a restarted agent knows what it had:
        # the last seq and its receive time per topic, and whether the broker holds a session for us.
        self._state_prefix = f"mqtt:{machine.id}:"
        saved = sink.saved_state(self._state_prefix)
        self._last_seq: dict[str, tuple[int, int]] = {
            k[len(self._state_prefix) + 4:]: tuple(json.loads(v)) for k, v in saved.items()
            if k.startswith(self._state_prefix + "seq:")}
        # Expected only for the same client id: a broker keeps sessions by client id.
        self._session_expected = saved.get(self._state_prefix + "session") == self.client_id
        self._session_lost_at: int | None = None  # the broker forgot us: the next seq jump is why
        self._first_message = True  # no message with a seq since the agent started
        self._fresh_start = True  # nothing stored since the agent started (back-pressure may be open from before)
        self._link_key = f"mqtt_link:{machine.id}"
        self._backpressure_key = f"backpressure:{machine.id}"
        # The agent's start decision (blocked until a build file is checked and cleared): re-published
        # retained on every connection, because the broker or the machine may have restarted meanwhile.
        self.desired_start_enabled = False
        self._desired_reason = "no clearance yet (agent started)"
        self._client: mqtt.Client | None = None
        self._threads: list[threading.Thread] = []
        self.state.detail = {"broker": self.broker, "client_id": self.client_id, "protocol": self.config.protocol,
                             "subscriptions": list(self.subscriptions), "session_present": None,
                             "subscribed": False}

    @classmethod
    def from_context(cls, machine: MachineConfig, sink: ReadingSink, context) -> "MqttConnector":
        """The agent's connector: its id in the client id, the outbox's group commit for the intake."""
        return cls(machine, sink, agent_id=context.agent_id, group_commit_ms=context.group_commit_ms)

    # ------------------------------------------------------------------ public
    @property
    def stats(self) -> MqttStats:
        """A snapshot of the connection's counters."""
        with self._lock:
            return replace(self._stats)

    async def start(self) -> None:
        """Start connecting (in the background, retrying with backoff) and delivering; returns at once."""
        if self._threads:
            return
        self._client = self._make_client()
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._supervise, name=f"mqtt-connect-{self.machine.id}", daemon=True),
            threading.Thread(target=self._flush_loop, name=f"mqtt-flush-{self.machine.id}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        """Store and acknowledge what already arrived (if the sink takes it), then disconnect."""
        if not self._threads:
            return
        self._stopping.set()
        await asyncio.to_thread(self._join)

    async def set_start_enabled(self, enabled: bool, *, reason: str) -> str:
        """Publish a retained start_enabled command (QoS 1) on the command topic and wait for the broker's PUBACK.

        Retained, so a machine that restarts and subscribes again gets the agent's current decision from the
        broker; re-published on every reconnection of the agent; and the agent's Last Will (set at connect)
        publishes start_enabled=false retained if the agent vanishes, so nobody enables a start unwatched."""
        topic = self.config.command_topic
        if not topic:
            raise ConnectorError(f"machine {self.machine.id} has no MQTT command_topic: it offers no start interlock")
        self.desired_start_enabled = bool(enabled)  # re-published on reconnection even if this send fails
        self._desired_reason = reason
        client = self._client
        if client is None or not self.state.connected:
            # Refuse rather than queue: a command sent much later could enable a start nobody wants now.
            raise ConnectorError(
                f"start_enabled={str(enabled).lower()} not sent to {self.machine.id}: broker {self.broker} "
                f"is not connected ({self.state.last_error or 'connecting'})")
        info = client.publish(topic, self._command(bool(enabled), reason), qos=1, retain=True)
        try:
            await asyncio.to_thread(info.wait_for_publish, COMMAND_TIMEOUT_S)
        except (RuntimeError, ValueError) as e:
            raise ConnectorError(f"start_enabled command to {topic} failed: {e}") from None
        if not info.is_published():
            raise ConnectorError(
                f"start_enabled={str(enabled).lower()} on {topic}: broker {self.broker} did not confirm "
                f"within {COMMAND_TIMEOUT_S:g} s")
        return (f"published start_enabled={str(enabled).lower()} to {topic} on {self.broker} "
                f"(QoS 1, retained, broker confirmed)")

    def _command(self, enabled: bool, reason: str) -> bytes:
        return json.dumps({"command": "start_enabled", "value": enabled, "reason": reason,
                           "ts": _iso(_now_ns()), "machine_id": self.machine.id}).encode()

    # ------------------------------------------------------------------ connection
    def _paho_logger(self) -> logging.Logger:
        """paho's log for this machine, without the "Client is not connected" error paho's network loop writes once
        after our own disconnect at stop: a log that says ERROR on every clean shutdown is not true."""
        paho_log = log.getChild(f"paho.{self.machine.id}")
        stopping = self._stopping

        def not_our_own_disconnect(record: logging.LogRecord) -> bool:
            return not (stopping.is_set() and record.getMessage().startswith("Client is not connected"))

        paho_log.filters = [not_our_own_disconnect]
        return paho_log

    def _make_client(self) -> mqtt.Client:
        client = make_client(self.config, self.client_id, machine_id=self.machine.id, manual_ack=True)
        client.enable_logger(self._paho_logger())
        if self.config.command_topic:
            # If the agent vanishes (crash, network), the broker tells the machine: no start unwatched.
            client.will_set(self.config.command_topic, self._command(False, f"agent connection to {self.broker} lost"),
                            qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _supervise(self) -> None:
        client = self._client
        assert client is not None
        while not self._stopping.is_set():
            self._keep_intake_running()
            self._lost.clear()
            try:
                client.connect(**connect_kwargs(self.config, receive_maximum=RECEIVE_MAXIMUM))
            except (OSError, ValueError) as e:
                self._connection_failed(self._words(e))
                self._stopping.wait(self._backoff.next_delay())
                continue
            client.loop_start()
            # Wait for the loss of this connection (or for stop); paho's thread ends with it.
            while not self._lost.wait(0.5):
                if self._stopping.is_set():
                    break
                self._keep_intake_running()
                if getattr(client, "_thread", True) is None:  # network thread died without on_disconnect
                    break
            if self._stopping.is_set():
                break
            client.loop_stop()
            self._stopping.wait(self._backoff.next_delay())

    def _keep_intake_running(self) -> None:
        """The flush thread takes every message in; if it ended (a bug no handler caught), say so and start it
        again: unacknowledged messages come back from the broker."""
        flush = self._threads[1] if len(self._threads) > 1 else None
        if flush is None or flush.ident is None or flush.is_alive() or self._stopping.is_set():
            return  # not started yet (start() starts it after this thread), running, or stopping
        self.state.intake_problem = "the intake thread ended"
        log.error("%s: the MQTT intake thread ended; starting it again", self.machine.id)
        self._event("intake_restarted", "alarm", "the MQTT intake thread ended unexpectedly and was started again",
                    _now_ns())
        self._threads[1] = threading.Thread(target=self._flush_loop, name=f"mqtt-flush-{self.machine.id}",
                                            daemon=True)
        self._threads[1].start()
        self.state.intake_problem = None

    def _words(self, e: BaseException) -> str:
        return describe_error(e, self.config, timeout_s=self._client.connect_timeout if self._client else 5)

    def _connection_failed(self, error: str) -> None:
        now = _now_ns()
        with self._lock:
            self.state.last_error = error
            first_of_outage = self._outage_since_ns is None
            if first_of_outage:
                self._outage_since_ns = now
        if first_of_outage:
            log.warning("%s: %s", self.machine.id, error)
            # A lasting condition: its start is durable, so after a restart inside the outage the new process
            # adds no second connection_lost and its connection_restored says how long it really lasted.
            self._durably(lambda: self.sink.open_condition(self._link_key, self._make_event(
                "connection_lost", "warning", f"MQTT connection to {self.broker} lost: {error}", now,
                since=_iso(now))))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connection_failed(f"broker {self.broker} refused the connection: {str(reason_code).lower()}")
            return
        now = _now_ns()
        self._backoff.reset()
        options = SubscribeOptions(qos=1) if self.config.protocol == "5" else 1
        # Subscribe on every connect: a broker that lost the session has lost the subscriptions too.
        result, _ = client.subscribe([(topic, options) for topic in self.subscriptions])
        if self.config.command_topic:
            # The current decision again, retained: the broker may have restarted without it, or the Last
            # Will may have replaced it while we were away.
            client.publish(self.config.command_topic, self._command(self.desired_start_enabled,
                                                                    f"(re)connection: {self._desired_reason}"),
                           qos=1, retain=True)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("%s: subscribe not sent: %s", self.machine.id, mqtt.error_string(result))
        with self._lock:
            self._generation += 1
            self._connected_generation = self._generation
            reconnect = self._ever_connected
            self._ever_connected = True
            outage_since = self._outage_since_ns
            self._outage_since_ns = None
            self.state.connected = True
            self.state.since_ns = now
            self.state.last_error = None
            if reconnect:
                self.state.reconnects += 1
            self.state.detail["session_present"] = bool(flags.session_present)
            self.state.detail["subscribed"] = False

        def restored(since: int) -> Event:
            outage_s = (now - since) / 1e9
            return self._make_event("connection_restored", "info",
                                    f"MQTT connection to {self.broker} restored after {outage_s:.1f} s", now,
                                    since=_iso(since), until=_iso(now), outage_s=round(outage_s, 3),
                                    down_since_ns=since)
        if outage_since is not None or not reconnect:  # not reconnect: an outage may be open from before a restart
            self._durably(lambda: self.sink.close_condition(self._link_key, restored))
        if (reconnect or self._session_expected) and not flags.session_present:
            # The broker forgot us (restarted without its persistence file, or the session expired while the
            # agent was down): what the machine published meanwhile is gone. Say so; the seq jump says how much.
            with self._lock:
                self._session_lost_at = now
            when = "while the agent was disconnected" if reconnect else "while the agent was not running"
            self._event("session_lost", "warning",
                        f"broker {self.broker} had no session for client id {self.client_id}: messages published "
                        f"{when} are lost", now, client_id=self.client_id)
        if not self._session_expected and self._persistent_session():
            self._session_expected = True
            self._durably(lambda: self.sink.save_state({self._state_prefix + "session": self.client_id}))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            error = f"broker {self.broker} refused the subscription to {', '.join(self.subscriptions)}: {failed[0].lower()}"
            with self._lock:
                self.state.last_error = error
            self._event("subscription_refused", "alarm", error, _now_ns())
        else:
            with self._lock:
                self.state.detail["subscribed"] = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was_connected = self.state.connected
            self._generation += 1
            self.state.connected = False
            self.state.detail["subscribed"] = False
        if not self._stopping.is_set() and was_connected:
            self._connection_failed(f"broker {self.broker} closed the connection: {str(reason_code).lower()}")
        self._lost.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._stats.messages_received += 1
            if self._stopping.is_set():
                return  # not acknowledged: the broker keeps it for the next session
            generation = self._connected_generation
            self._stats.pending_unacked += 1
        self._inbox.put(_Message(msg.mid, msg.qos, msg.topic, bytes(msg.payload), _now_ns(), generation))

    # ------------------------------------------------------------------ durable hand-over
    def _make_event(self, kind: str, severity: str, message: str, ts_ns: int, **fields) -> Event:
        return Event(machine_id=self.machine.id, kind=kind, message=message, ts_ns=ts_ns, severity=severity,
                     fields={"broker": self.broker, **fields})

    def _event(self, kind: str, severity: str, message: str, ts_ns: int, **fields) -> None:
        """Store an event durably now (the sink takes events even at its budget); kept for a retry only when the
        sink fails outright (a disk error), so a crash loses nothing that was raised."""
        event = self._make_event(kind, severity, message, ts_ns, **fields)
        if self._events or not self._durably(lambda: self.sink.event(event)):
            self._events.append(event)

    def _durably(self, store) -> bool:
        """Run one durable store; False (logged) if the sink failed."""
        try:
            store()
            return True
        except Exception as e:  # noqa: BLE001 - the connection keeps running; the caller keeps or retries
            log.warning("%s: could not store the agent's record: %s", self.machine.id, e)
            return False

    def _persistent_session(self) -> bool:
        """True when the broker keeps our session while we are away (3.1.1: clean session off; 5: an expiry)."""
        return self.config.protocol == "3.1.1" or self.config.session_expiry_s > 0

    def _drain_events(self) -> None:
        while self._events:
            event = self._events[0]
            try:
                self.sink.event(event)
            except Exception as e:  # noqa: BLE001 - kept and retried; an event is not dropped for a sink hiccup
                log.warning("%s: event %s not stored yet: %s", self.machine.id, event.kind, e)
                return
            self._events.popleft()

    def _flush_loop(self) -> None:
        while True:
            self._drain_events()
            try:
                first = self._inbox.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set() and self._finished():
                    break
                continue
            batch = [first]
            deadline = time.monotonic() + self.group_commit_s
            while len(batch) < MAX_BATCH:
                left = deadline - time.monotonic()
                try:
                    batch.append(self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._store_and_ack(batch)
            except Exception as e:  # noqa: BLE001 - the intake must not end; nothing received is dropped
                self._failed_batch(batch, e)
        self._drain_events()

    def _finished(self) -> bool:
        return all(not t.is_alive() for t in self._threads[:1])

    def _store_and_ack(self, batch: list[_Message]) -> None:
        for m in batch:
            if m.ingest is None and m.reason is None:
                try:
                    m.ingest, m.seq = parse_with_seq(m.payload, machine=self.machine, topic=m.topic,
                                                     received_ns=m.received_ns)
                except MalformedPayload as e:
                    m.reason = e.reason
                except Exception as e:  # noqa: BLE001 - a message this agent cannot read is quarantined, never fatal
                    log.exception("%s: reading a message on %s failed", self.machine.id, m.topic)
                    m.reason = f"the agent could not read it ({type(e).__name__}: {str(e)[:200]})"
        ingests = [self._with_gap_events(m) for m in batch if m.ingest is not None]
        refused_since: float | None = None
        refused_kind = ""
        refusals = 0
        while True:
            try:
                self._store(batch, ingests)
                break
            except Exception as e:  # noqa: BLE001 - nothing is acked; retried until it is stored
                kind = "backpressure" if isinstance(e, OutboxFull) else "sink_error"
                refusals += 1
                if kind == "sink_error" and refusals >= ISOLATE_AFTER and not isinstance(e, OSError):
                    # Not the disk and not the budget: something in these messages is refused each time. Find
                    # the message(s) the pipeline refuses and quarantine them, so one message cannot stop the
                    # machine's intake for good.
                    ingests = self._isolate(batch, e)
                    refusals = 0
                    continue
                if refused_since is None or kind != refused_kind:
                    refused_since, refused_kind = time.monotonic(), kind
                    with self._lock:
                        self._stats.backpressure = True
                    text = (f"outbox full: {e}; not acknowledging MQTT messages, the broker keeps them"
                            if kind == "backpressure" else f"storing MQTT messages failed: {e!r}; will retry")
                    log.error("%s: %s", self.machine.id, text)
                    if kind == "backpressure":  # lasting, and durable: not raised again after a restart
                        event = self._make_event(kind, "alarm", text, _now_ns(), pending=len(batch))
                        self._durably(lambda: self.sink.open_condition(self._backpressure_key, event))
                    else:
                        self._event(kind, "alarm", text, _now_ns(), pending=len(batch))
                self._drain_events()
                if self._stopping.wait(RETRY_S) and self._stopping.is_set():
                    # Stopping while the sink refuses: leave the messages unacknowledged for redelivery.
                    with self._lock:
                        self._stats.pending_unacked -= len(batch)
                    return
        if refused_since is not None and refused_kind != "backpressure":
            held_s = time.monotonic() - refused_since
            self._event("sink_recovered", "info", f"stored {len(batch)} held MQTT messages after {held_s:.1f} s",
                        _now_ns(), held_s=round(held_s, 3))
        if refused_since is not None or self._fresh_start:
            # Back-pressure may have begun before a restart: its true start is in the condition.
            with self._lock:
                self._stats.backpressure = False
            n, now = len(batch), _now_ns()

            def released(since: int) -> Event:
                return self._make_event("backpressure_released", "info",
                                        f"stored {n} held MQTT messages after {(now - since) / 1e9:.1f} s", now,
                                        held_s=round((now - since) / 1e9, 3), since_ns=since)
            self._durably(lambda: self.sink.close_condition(self._backpressure_key, released))
            self._fresh_start = False
        self._ack(batch)

    def _failed_batch(self, batch: list[_Message], error: Exception) -> None:
        """A batch failed in a way nothing else caught: keep every message of it in quarantine (raw, with the
        reason: recoverable), acknowledge it, raise an alarm, and go on with the next batch."""
        log.exception("%s: storing a batch failed unexpectedly; its messages go to quarantine", self.machine.id)
        reason = f"the agent failed on this message's batch ({type(error).__name__}: {str(error)[:200]})"
        try:
            for m in batch:
                if not m.quarantined:
                    self.sink.quarantine(source="mqtt", origin=m.topic, raw=m.payload, reason=m.reason or reason,
                                         machine_id=self.machine.id)
                    m.quarantined = True
            self._ack(batch)
        except Exception:  # noqa: BLE001 - not acknowledged: the broker sends them again after a reconnect
            log.exception("%s: quarantining the failed batch failed too; left for redelivery", self.machine.id)
            with self._lock:
                self._stats.pending_unacked -= len(batch)
        self._event("intake_error", "alarm", f"a batch of {len(batch)} message(s) failed unexpectedly "
                    f"({type(error).__name__}: {str(error)[:200]}); kept in quarantine, intake goes on", _now_ns())

    def _isolate(self, batch: list[_Message], error: Exception) -> list[Ingest]:
        """Store the batch's messages one by one; quarantine each one the pipeline refuses; return the ingests
        left to store (none: they are stored already, and storing again would write the same points)."""
        for m in batch:
            if m.ingest is None:
                continue
            try:
                self.sink.submit([m.ingest], state=self._seq_state([m]))
                with self._lock:
                    self._stats.readings += len(m.ingest.readings)
            except OutboxFull:  # the budget, not this message: the rest waits like any back-pressured batch
                return [x.ingest for x in batch if x.ingest is not None]
            except Exception as e:  # noqa: BLE001 - this one message is what the pipeline refuses
                m.reason = f"refused by the agent's pipeline ({type(e).__name__}: {str(e)[:200]})"
                log.error("%s: message on %s refused by the pipeline, quarantined: %s", self.machine.id, m.topic, e)
            m.ingest = None
        self._event("poison_message", "alarm", f"a batch kept failing to store ({type(error).__name__}: "
                    f"{str(error)[:200]}); its messages were stored one by one and the refused ones quarantined",
                    _now_ns())
        return []

    def _store(self, batch: list[_Message], ingests: list[Ingest]) -> None:
        # Quarantine is durable too; each malformed message is quarantined once even if submit is retried.
        for m in batch:
            if m.reason is not None and not m.quarantined:
                self.sink.quarantine(source="mqtt", origin=m.topic, raw=m.payload, reason=m.reason,
                                     machine_id=self.machine.id)
                m.quarantined = True
                with self._lock:
                    self._stats.quarantined += 1
                log.warning("%s: quarantined a message on %s: %s", self.machine.id, m.topic, m.reason)
        if ingests:
            self.sink.submit(ingests, state=self._seq_state(batch))
            with self._lock:
                self._stats.readings += sum(len(i.readings) for i in ingests)

    def _seq_state(self, batch: list[_Message]) -> dict[str, str]:
        """The last seq (and its receive time) of each topic in the batch, stored with the batch."""
        topics = {m.topic for m in batch if m.seq is not None}
        return {f"{self._state_prefix}seq:{t}": json.dumps(self._last_seq[t]) for t in topics if t in self._last_seq}

    def _with_gap_events(self, m: _Message) -> Ingest:
        """Follow the machine's seq per topic; a jump is a gap (with the missing range and span), a count that
        starts again near 0 is a machine restart, and a seq a little below the last is a redelivery.

        How a restart is told from the rest: the seq falls back by more than seq_window to a value of at most
        seq_window (a machine counts from 0 again). A fall back by more than the window to a higher value is
        neither: recorded as `seq_backward`, never turned into a gap."""
        assert m.ingest is not None
        if m.seq is None:
            return m.ingest
        window = self.config.seq_window
        previous = self._last_seq.get(m.topic)
        first_since_start, self._first_message = self._first_message, False
        with self._lock:
            session_lost_at = self._session_lost_at
        if previous is None:
            self._last_seq[m.topic] = (m.seq, m.received_ns)
            return m.ingest
        last, last_at = previous
        if m.seq <= last:
            if last - m.seq <= window:
                return m.ingest  # a redelivery or a message out of order: the count stays where it was
            self._last_seq[m.topic] = (m.seq, m.received_ns)
            if m.seq <= window:
                event = Event(self.machine.id, "machine_restart", f"seq on {m.topic} started again at {m.seq} after "
                              f"{last}: the machine restarted its count (not a gap)", m.received_ns, "info",
                              {"topic": m.topic, "from_seq": last, "to_seq": m.seq})
            else:
                event = Event(self.machine.id, "seq_backward", f"seq on {m.topic} went back from {last} to {m.seq}, "
                              f"more than the {window} a redelivery explains and not a restart from 0: following "
                              f"the new count; no gap assumed", m.received_ns, "warning",
                              {"topic": m.topic, "from_seq": last, "to_seq": m.seq})
            return replace(m.ingest, extra_events=(*m.ingest.extra_events, event))
        self._last_seq[m.topic] = (m.seq, m.received_ns)
        if m.seq == last + 1:
            return m.ingest
        missing = m.seq - last - 1
        with self._lock:
            self._stats.seq_gaps += 1
        if session_lost_at is not None and last_at <= session_lost_at:
            cause = "dropped by the broker, which lost the agent's session"
        elif first_since_start:
            cause = "published while the agent was not running and not kept by the broker"
        else:
            cause = "never reached the agent"
        span = f"{_iso(last_at)}–{_iso(m.received_ns)}"
        gap = Event(machine_id=self.machine.id, kind="gap", severity="warning", ts_ns=m.received_ns,
                    message=f"{missing} message(s) missing on {m.topic}, seq {last + 1}–{m.seq - 1}, {span}: {cause}",
                    fields={"topic": m.topic, "missing": missing, "from_seq": last + 1, "to_seq": m.seq - 1,
                            "start_ns": last_at, "end_ns": m.received_ns, "recovery": "none",
                            "cause": f"{missing} messages missing, seq {last + 1}–{m.seq - 1}: {cause}"})
        return replace(m.ingest, extra_events=(*m.ingest.extra_events, gap))

    def _ack(self, batch: list[_Message]) -> None:
        client = self._client
        for m in batch:
            with self._lock:
                # A message from an earlier connection cannot be acknowledged on this one: the broker
                # sends it again (it is stored already; the copy is identical when the machine sends ts).
                current = m.generation == self._generation and self.state.connected
                if current and client is not None:
                    client.ack(m.mid, m.qos)
                    self._stats.messages_acked += 1
                else:
                    self._stats.left_for_redelivery += 1
                self._stats.pending_unacked -= 1

    def _join(self) -> None:
        supervisor, flusher = self._threads
        client = self._client
        supervisor.join()
        # The flusher stores and acks what already arrived, then ends (supervisor is done).
        flusher.join()
        if client is not None:
            if client.is_connected():
                client.disconnect()  # queued PUBACKs are written before DISCONNECT
            client.loop_stop()
        with self._lock:
            self.state.connected = False
        self._threads = []
