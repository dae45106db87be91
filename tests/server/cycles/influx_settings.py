"""Fixtures for server tests that read InfluxDB (cycles, histories): the server's settings point at a private
database of the session's real InfluxDB. Imported by those folders' conftest.py files."""

from __future__ import annotations

import uuid

import pytest

from routekit import ROUTES_WITHOUT_CYCLES
from server.settings import Settings


@pytest.fixture(scope="module")
def influx_database(influxdb, database_url) -> str:
    """A fresh InfluxDB database per test module and SQL database (device codes repeat across them)."""
    name = f"amt_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(name)
    return name


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory, influxdb, influx_database) -> Settings:
    """Server settings for tests (light Argon2) reading the module's InfluxDB database."""
    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), influx_url=influxdb.url,
                    influx_database=influx_database, routes=ROUTES_WITHOUT_CYCLES)
