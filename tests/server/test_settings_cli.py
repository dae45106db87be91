"""Settings from AMTRACE_* variables, default secrets refused outside development, and the CLI commands."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from server.cli import main
from server.settings import Settings


def test_default_secrets_refused_in_production(monkeypatch):
    monkeypatch.setenv("AMTRACE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert ("AMTRACE_SECRET_KEY, AMTRACE_AUDIT_KEY must be set to a private value of at least 32 characters "
            "when AMTRACE_ENVIRONMENT=production") in str(e.value)
    monkeypatch.setenv("AMTRACE_SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("AMTRACE_AUDIT_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("AMTRACE_DATABASE_URL", "postgresql+psycopg://amtrace@db/amtrace")
    s = Settings()
    assert (s.environment, s.database_url) == ("production", "postgresql+psycopg://amtrace@db/amtrace")


def test_production_is_the_default_and_refuses_typed_or_shared_keys(monkeypatch):
    """Issue 16: with AMTRACE_ENVIRONMENT unset the server ran on public built-in keys (a forged admin token
    was accepted). Unset now means production; keys that do not look random, or one key used twice, are refused."""
    monkeypatch.delenv("AMTRACE_ENVIRONMENT")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "set AMTRACE_ENVIRONMENT=development explicitly" in str(e.value)
    monkeypatch.setenv("AMTRACE_SECRET_KEY", "a" * 48)
    monkeypatch.setenv("AMTRACE_AUDIT_KEY", "ab" * 24)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "AMTRACE_SECRET_KEY, AMTRACE_AUDIT_KEY does not look random" in str(e.value)
    same = secrets.token_urlsafe(48)
    monkeypatch.setenv("AMTRACE_SECRET_KEY", same)
    monkeypatch.setenv("AMTRACE_AUDIT_KEY", same)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "AMTRACE_SECRET_KEY and AMTRACE_AUDIT_KEY must differ" in str(e.value)
    monkeypatch.setenv("AMTRACE_AUDIT_KEY", secrets.token_hex(32))
    assert Settings().environment == "production"


def test_default_database_is_a_sqlite_file(monkeypatch):
    monkeypatch.delenv("AMTRACE_DATABASE_URL", raising=False)
    assert Settings().database_url == "sqlite:///./var/server.db"


def test_cli_migrate_create_user_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AMTRACE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("AMTRACE_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("AMTRACE_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("AMTRACE_ARGON2_PARALLELISM", "1")
    monkeypatch.setenv("AMTRACE_NEW_USER_PASSWORD", "first-admin-pass")
    assert main(["migrate"]) == 0
    assert main(["create-user", "root", "--full-name", "Rita Root", "--role", "admin"]) == 0
    assert main(["create-user", "root", "--full-name", "Rita Root", "--role", "admin"]) == 1
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr()
    assert "created user root (id 1, role admin)" in out.out
    assert "User id 'root' exists or existed; user ids are never reused" in out.err
    assert "checked 2 audit entries, 0 signatures and 1 sealed rows" in out.out and "audit trail intact" in out.out


def test_cli_refuses_production_with_default_secrets(monkeypatch):
    monkeypatch.setenv("AMTRACE_ENVIRONMENT", "production")
    with pytest.raises(SystemExit) as e:
        main(["audit", "verify"])
    assert "settings refused" in str(e.value)


def test_a_cli_pointed_at_a_database_amtrace_never_created_says_so(tmp_path, monkeypatch, capsys):
    """A wrong AMTRACE_DATABASE_URL answered `audit verify` with a SQLAlchemy traceback."""
    from server.cli import main

    import sqlite3

    sqlite3.connect(tmp_path / "not-amtrace.db").close()  # a database, but not one amtrace made
    monkeypatch.setenv("AMTRACE_DATABASE_URL", f"sqlite:///{tmp_path}/not-amtrace.db")
    assert main(["audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert "has no amtrace records (no such table: audit_entries)" in err and "amtrace-server migrate" in err
    assert "Traceback" not in err


def test_a_cli_pointed_at_no_database_file_says_so_and_creates_none(tmp_path, monkeypatch):
    """`audit verify` without settings once left an empty ./var/server.db behind."""
    from server.cli import main

    target = tmp_path / "var" / "server.db"
    monkeypatch.setenv("AMTRACE_DATABASE_URL", f"sqlite:///{target}")
    with pytest.raises(SystemExit) as e:
        main(["audit", "verify"])
    assert f"no database at {target}" in str(e.value) and "amtrace-server migrate" in str(e.value)
    assert not target.exists() and not target.parent.exists()


@pytest.mark.parametrize("url, words", [
    ("nonsense", "AMTRACE_DATABASE_URL: not a database URL"),
    ("mysql://u@h/db", "AMTRACE_DATABASE_URL: mysql is not a database amtrace runs on"),
])
def test_an_unusable_database_url_is_one_line_naming_the_setting(monkeypatch, url, words):
    from server.cli import main

    monkeypatch.setenv("AMTRACE_DATABASE_URL", url)
    with pytest.raises(SystemExit) as e:
        main(["audit", "verify"])
    message = str(e.value)
    assert message.startswith("amtrace-server: settings refused: ") and words in message
    assert len(message.splitlines()) == 1 and "pydantic" not in message


def test_serve_refuses_a_database_that_is_not_migrated_and_readyz_says_why(tmp_path, monkeypatch, capsys):
    """It used to start, answer /healthz ok, and every call with a 500."""
    import sqlite3

    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.cli import main
    from server.db import migrate

    sqlite3.connect(tmp_path / "empty.db").close()
    monkeypatch.setenv("AMTRACE_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("the database has no amtrace schema: run `amtrace-server migrate`") and "\n" not in err

    # A database one migration behind the code: serve refuses, and a running server's /readyz says so.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from server.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    before = ScriptDirectory.from_config(cfg).get_revision(head).down_revision
    url = f"sqlite:///{tmp_path}/behind.db"
    migrate(url, before)
    monkeypatch.setenv("AMTRACE_DATABASE_URL", url)
    assert main(["serve", "--port", "0"]) == 2
    assert f"schema is at {before}, the code needs {head}" in capsys.readouterr().err
    with TestClient(create_app(Settings())) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not ready"
        assert "run `amtrace-server migrate`" in r.json()["problems"][0]
        migrate(url)
        r = client.get("/readyz")
        body = r.json()
        assert isinstance(body.pop("warnings"), list)  # e.g. the InfluxDB retention, not a reason to stop serving
        assert r.status_code == 200 and body == {"status": "ready", "problems": [], "environment": "development"}
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
