"""Start and stop the real services amtrace talks to, on free loopback ports, data under one folder.

Used by `make demo` (through stack.sh) and by the test fixtures (tests/conftest.py), so that the
demo and the tests run the very same Mosquitto, InfluxDB 1.x, VictoriaMetrics and PostgreSQL.
Every service binds to 127.0.0.1 only; its data and log live under the directory it is given.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started or did not become ready."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before port {port} opened")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until url answers with a 2xx status."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
                if 200 <= r.status < 300:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    raise ServiceError(f"{url} did not answer within {timeout:.0f} s ({last})")


def _which(name: str, *patterns: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    raise ServiceError(f"'{name}' is not installed; run deploy/local/install-deps.sh (as root)")


class Service:
    """A service process on a loopback port; start(), stop(), restart() keep port and data."""

    name = "service"

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / f"{self.name}.log"

    def command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def wait_ready(self) -> None:
        wait_for_port(self.port, proc=self.proc)

    def start(self) -> "Service":
        """Start the process and wait until it serves."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            **self.popen_kwargs(),
        )
        log.close()
        try:
            self.wait_ready()
        except ServiceError as e:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{self.name} failed to start: {e}\n--- {self.log_path} ---\n{tail}") from e
        return self

    def popen_kwargs(self) -> dict:
        return {}

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with kill=True) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Mosquitto(Service):
    """Eclipse Mosquitto broker with persistence, so persistent sessions survive a restart."""

    name = "mosquitto"

    def command(self) -> list[str]:
        conf = self.root / "mosquitto.conf"
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            # A persistent session keeps every QoS 1 message while the agent applies
            # back-pressure or is down: no silent drop at the broker either.
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 1000\n"
            "log_dest stdout\n"
        )
        return [_which("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)]

    def __init__(self, root: Path, port: int | None = None):
        if os.geteuid() == 0:
            # Debian's mosquitto drops privileges to user 'mosquitto' when started as root, and
            # that user cannot reach pytest's or mkdtemp's private folders: without its own
            # reachable folder it could not save its sessions and would forget them on restart.
            import tempfile

            root = Path(tempfile.mkdtemp(prefix="amtrace-mosquitto-"))
            os.chmod(root, 0o755)
        super().__init__(root, port)

    def popen_kwargs(self) -> dict:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("mosquitto")
                for p in (self.root / "data", *(self.root / "data").glob("*")):
                    shutil.chown(p, "mosquitto")
            except (KeyError, LookupError):
                pass
        return {}


class InfluxDB1(Service):
    """InfluxDB 1.x (Debian's influxd), HTTP API on a loopback port."""

    name = "influxdb"

    def __init__(self, root: Path, port: int | None = None):
        super().__init__(root, port)
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.root / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.root}/meta"\n'
            f'[data]\n  dir = "{self.root}/data"\n  wal-dir = "{self.root}/wal"\n'
            '  query-log-enabled = false\n  index-version = "tsi1"\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "  max-body-size = 0\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        return [_which("influxd", "/usr/bin/influxd"), "-config", str(conf)]

    def wait_ready(self) -> None:
        wait_for_http(self.url + "/ping", proc=self.proc)

    def query(self, q: str, db: str | None = None) -> dict:
        """Run an InfluxQL query and return the decoded JSON answer."""
        import json
        import urllib.parse

        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=30) as r:  # noqa: S310
            return json.loads(r.read())

    def create_database(self, db: str) -> None:
        """Create a database (idempotent)."""
        self.query(f'CREATE DATABASE "{db}"')


class VictoriaMetrics(Service):
    """VictoriaMetrics (Debian's victoria-metrics): a real server for the InfluxDB v2 write API."""

    name = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            _which("victoria-metrics", "/usr/bin/victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.root}/data",
            "-retentionPeriod=100y",
            # Same series + same timestamp must count once, as in InfluxDB: without this
            # VictoriaMetrics keeps both samples of a retried write.
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]

    def wait_ready(self) -> None:
        wait_for_http(self.url + "/health", proc=self.proc)


class Postgres(Service):
    """A throw-away PostgreSQL cluster (Debian's postgresql binaries) on a loopback port."""

    name = "postgres"
    user = "postgres"

    def _bin(self, tool: str) -> str:
        hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
        if not hits:
            raise ServiceError("PostgreSQL is not installed; run deploy/local/install-deps.sh (as root)")
        return hits[-1]

    def _as_user(self) -> dict:
        # PostgreSQL refuses to run as root; run it as the 'postgres' system user.
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid}

    def __init__(self, root: Path, port: int | None = None):
        if os.geteuid() == 0:
            # The 'postgres' user must be able to reach its data directory; pytest's and
            # mkdtemp's folders are private to root, so the cluster lives in its own folder.
            import tempfile

            root = Path(tempfile.mkdtemp(prefix="amtrace-pg-"))
            os.chmod(root, 0o755)
        super().__init__(root, port)

    def _init(self) -> None:
        data = self.root / "data"
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
            shutil.chown(data, self.user)
        done = subprocess.run(
            [self._bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            capture_output=True, text=True, **self._as_user(),
        )
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.strip()}")

    def command(self) -> list[str]:
        self._init()
        return [
            self._bin("postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "fsync=off", "-c", "max_connections=200",
        ]

    def popen_kwargs(self) -> dict:
        return self._as_user()

    def dsn(self, db: str = "postgres") -> str:
        """SQLAlchemy URL for database db."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, db: str) -> None:
        """Create database db (no error if it exists)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (db,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{db}"')


SERVICES = {"mosquitto": Mosquitto, "influxdb": InfluxDB1, "victoria-metrics": VictoriaMetrics,
            "postgres": Postgres}
