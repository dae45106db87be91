"""Who is asking (a person or an edge agent), roles, and password hashing (Argon2id)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.settings import Settings

ROLES = ("operator", "production_manager", "quality_engineer", "design_engineer", "clinician", "admin")
AGENT_TOKEN_PREFIX = "amtagent_"
DISPLAY_TOKEN_PREFIX = "amtdisplay_"
DISPLAY_ROLE = "wall_display"  # a screen, not a person: admitted only by the dashboard's read endpoints


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user with a role, an edge agent with its machines, or the server."""

    kind: Literal["user", "agent", "display", "system"]
    id: int
    name: str
    full_name: str
    role: str | None = None
    machine_ids: frozenset[str] = field(default_factory=frozenset)
    kiosk: bool = False  # logged in with badge and PIN: kiosk actions only

    @property
    def actor(self) -> str:
        """How the audit trail names this caller, e.g. user:alice or agent:cell-1."""
        return f"{self.kind}:{self.name}"

    @property
    def user_id(self) -> int | None:
        """The user id when the caller is a person."""
        return self.id if self.kind == "user" else None


SYSTEM = Principal(kind="system", id=0, name="amtrace", full_name="amtrace server")


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def password_hasher(settings: Settings) -> PasswordHasher:
    """The Argon2id hasher configured by settings."""
    return _hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)


def hash_password(settings: Settings, password: str) -> str:
    """Argon2id hash of password."""
    return password_hasher(settings).hash(password)


def password_matches(settings: Settings, password_hash: str, password: str) -> bool:
    """True when password matches the stored Argon2 hash."""
    try:
        return password_hasher(settings).verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) so hashes of records are reproducible."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_sha256(value: Any) -> str:
    """SHA-256 of the canonical JSON of value: the hash a signature binds to."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def seal(key: str, value: Any) -> str:
    """HMAC-SHA256 of the canonical JSON of value under the audit key."""
    return hmac.new(key.encode(), canonical_json(value).encode(), hashlib.sha256).hexdigest()
