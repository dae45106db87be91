"""Shared fixtures: real services (Mosquitto, InfluxDB 1.x, VictoriaMetrics, PostgreSQL) on free
loopback ports, started once per test session from deploy/local/localstack.py, the same code
`make demo` uses. Tests that need a fresh service (to restart or kill it) use the *_factory
fixtures and get their own instance."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The server refuses its built-in public keys unless told it runs for development: the tests (and the servers
# they start, which inherit this environment) are that. Tests of the production refusal set it themselves.
os.environ.setdefault("AMTRACE_ENVIRONMENT", "development")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import localstack  # noqa: E402


@pytest.fixture(scope="session")
def services_root(tmp_path_factory) -> Path:
    """One folder for the data and logs of the session's services."""
    return tmp_path_factory.mktemp("services")


def _factory(cls, tmp_path_factory):
    started = []

    def make(**kwargs):
        svc = cls(tmp_path_factory.mktemp(cls.name), **kwargs).start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop(kill=True)


@pytest.fixture
def mosquitto_factory(tmp_path_factory):
    """Start a private Mosquitto broker (restartable) for one test."""
    yield from _factory(localstack.Mosquitto, tmp_path_factory)


@pytest.fixture
def influxdb_factory(tmp_path_factory):
    """Start a private InfluxDB 1.x (restartable) for one test."""
    yield from _factory(localstack.InfluxDB1, tmp_path_factory)


@pytest.fixture
def victoria_factory(tmp_path_factory):
    """Start a private VictoriaMetrics (restartable) for one test."""
    yield from _factory(localstack.VictoriaMetrics, tmp_path_factory)


@pytest.fixture(scope="session")
def mosquitto(services_root):
    """A Mosquitto broker shared by the session."""
    svc = localstack.Mosquitto(services_root / "mosquitto").start()
    yield svc
    svc.stop(kill=True)


@pytest.fixture(scope="session")
def influxdb(services_root):
    """An InfluxDB 1.x server shared by the session; each test should use its own database."""
    svc = localstack.InfluxDB1(services_root / "influxdb").start()
    yield svc
    svc.stop(kill=True)


@pytest.fixture(scope="session")
def victoria(services_root):
    """A VictoriaMetrics server shared by the session (InfluxDB v2 write API)."""
    svc = localstack.VictoriaMetrics(services_root / "victoria").start()
    yield svc
    svc.stop(kill=True)


@pytest.fixture(scope="session")
def postgres(services_root):
    """A PostgreSQL cluster shared by the session."""
    svc = localstack.Postgres(services_root / "postgres").start()
    yield svc
    svc.stop(kill=True)
