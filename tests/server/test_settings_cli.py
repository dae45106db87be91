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

    monkeypatch.setenv("AMTRACE_DATABASE_URL", f"sqlite:///{tmp_path}/not-amtrace.db")
    assert main(["audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert "has no amtrace records (no such table: audit_entries)" in err and "amtrace-server migrate" in err
    assert "Traceback" not in err
