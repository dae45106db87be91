"""Notifications reach people where they are (R16, issue 20 item 4): the live event stream wakes at once, and the
outbound webhook delivers every notice to a real HTTP receiver on loopback, signed, retried after refusals, and
still delivered when the receiver was down and the server restarted meanwhile (the notifications table is the
webhook's durable queue)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import localstack
from uikit import UiServer

SECRET = "webhook-test-secret-0123456789abcdef"


class Receiver:
    """A webhook receiver: answers with the queued statuses first (503 …), then 200; keeps what it got."""

    def __init__(self, port: int | None = None):
        self.port = port or localstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}/amtrace"
        self.got: list[tuple[int, dict, dict]] = []  # (status answered, headers, body)
        self.refuse: list[int] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.refuse.pop(0) if receiver.refuse else 200
                receiver.got.append((status, dict(self.headers), {"raw": body, **json.loads(body)}))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def taken(self) -> dict[int, dict]:
        """The notices answered 2xx, by notification id (a second 2xx for one id would overwrite: counted apart)."""
        return {b["id"]: b for s, _, b in self.got if s == 200}


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, receiver):
    """The real server with the webhook pointed at the receiver, pushing every 0.2 s."""
    server = UiServer(tmp_path_factory.mktemp("push-server"), env={
        "AMTRACE_NOTIFY_WEBHOOK_URL": receiver.url, "AMTRACE_NOTIFY_WEBHOOK_SECRET": SECRET,
        "AMTRACE_NOTIFY_PUSH_INTERVAL_S": "0.2"}).start()
    yield server
    server.stop()


def _wait(predicate, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _ids_for(plant, record_id: str) -> dict[str, int]:
    """username → id of the notice about this record, read as each person from the API."""
    out = {}
    for who in ("quality_engineer", "production_manager", "design_engineer"):
        [n] = [n for n in plant.call("GET", "/notifications", who) if n["record_id"] == record_id]
        out[plant.users[who]["username"]] = n["id"]
    return out


def test_every_notice_is_pushed_once_signed_and_retried_after_refusals(plant, receiver):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    receiver.refuse[:] = [503, 503]
    nc = plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "dimensional", "description": "flange 0.3 mm thin", "device_code": code})
    ids = _ids_for(plant, str(nc["id"]))
    _wait(lambda: set(ids.values()) <= set(receiver.taken()))
    for username, nid in ids.items():
        answers = [s for s, _, b in receiver.got if b["id"] == nid]
        assert answers.count(200) == 1, f"notice {nid} taken once, not {answers}"
        status, headers, body = next(g for g in receiver.got if g[0] == 200 and g[2]["id"] == nid)
        assert body["recipient"]["username"] == username and body["kind"] == "nonconformity_raised"
        assert body["message"] == f"Nonconformity {nc['id']} (dimensional) on device {code}: flange 0.3 mm thin"
        expected = "sha256=" + hmac.new(SECRET.encode(), body["raw"], hashlib.sha256).hexdigest()
        assert headers["X-Amtrace-Signature"] == expected
    assert [s for s, _, _ in receiver.got[:2]] == [503, 503], "the refusals were retried, not dropped"


def test_a_notice_raised_while_the_receiver_is_down_arrives_after_a_server_restart(plant, receiver, ui_server):
    m = plant.machine()
    receiver.stop()  # the port is closed: connection refused
    nc = plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "kind": "other", "machine_id": m["id"], "description": "chiller alarm"})
    wanted = {n["id"] for who in ("production_manager",) for n in plant.call("GET", "/notifications", who)
              if n["record_id"] == str(nc["id"])}
    assert wanted
    time.sleep(1.0)  # a few refused attempts
    ui_server.stop()
    receiver.start()
    ui_server.start()
    _wait(lambda: wanted <= set(receiver.taken()))
    assert all([s for s, _, b in receiver.got if b["id"] == nid].count(200) == 1 for nid in wanted)


def test_the_stream_sends_unread_notices_then_each_new_one_at_once(plant, ui_server):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    with httpx.Client(base_url=ui_server.url, timeout=30) as c, \
            c.stream("GET", "/api/v1/notifications/stream", headers=plant.h("design_engineer")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()

        def next_event():
            name = None
            for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    return name, json.loads(line[6:])

        name, unread = next_event()
        assert name == "snapshot" and all(n["read_at"] is None for n in unread)
        nc = plant.call("POST", "/nonconformities", "operator", 201, json={
            "kind": "surface", "description": "powder residue in the lattice", "device_code": code})
        name, notice = next_event()
        assert name == "notification" and notice["record_id"] == str(nc["id"])
