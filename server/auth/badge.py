"""Kiosk credential: badge number (who) and PIN (the secret), Argon2id-hashed like passwords."""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.auth import guard
from server.db import begin_read, end_read_transaction
from server.errors import Conflict, Unauthorized
from server.models import User
from server.security import SYSTEM, Principal, hash_password, password_matches

PIN_PATTERN = re.compile(r"^[0-9]{4,12}$")
KIOSK_SCOPE = "kiosk"


class KioskSettings(BaseSettings):
    """Kiosk session settings (AMTRACE_KIOSK_<NAME>); plant-specific, hence configurable."""

    model_config = SettingsConfigDict(env_prefix="AMTRACE_KIOSK_", extra="ignore")

    token_minutes: int = Field(default=10, ge=1, le=60,
                               description="Lifetime of a token issued for badge + PIN (the server-side log-out)")
    idle_seconds: int = Field(default=120, ge=10, le=3600,
                              description="Seconds without a touch or key press before the kiosk logs out")
    pin_min_digits: int = Field(default=4, ge=4, le=12, description="Shortest PIN accepted when it is set")


@lru_cache
def kiosk_settings() -> KioskSettings:
    """Kiosk settings read once from the environment."""
    return KioskSettings()


def set_badge(session: Session, *, actor: Principal, user: User, badge_number: str, pin: str) -> User:
    """Give a person a badge number and PIN (replacing earlier ones); the PIN is kept only as a hash."""
    if user.role == "admin":
        raise Conflict("An administrator gets no badge: a badge and a short PIN are for the kiosk, and an "
                       "administrator's account is worth more than a PIN protects", code="badge_role")
    minimum = kiosk_settings().pin_min_digits
    if not PIN_PATTERN.fullmatch(pin) or len(pin) < minimum:
        raise Conflict(f"The PIN must be {minimum} to 12 digits", code="weak_pin")
    holder = session.scalar(select(User).where(User.badge_number == badge_number))
    if holder is not None and holder.id != user.id:
        raise Conflict(f"Badge {badge_number} belongs to another person", code="badge_taken")
    old = {"badge_number": user.badge_number}
    user.badge_number = badge_number
    user.pin_hash = hash_password(settings_of(session), pin)
    record(session, actor=actor, action="badge_set", record_type="user", record_id=user.id, old=old,
           new={"badge_number": badge_number})
    return user


def authenticate_badge(session: Session, *, badge_number: str, pin: str) -> User:
    """Check a kiosk login; failures share the password's counter and lockout (server/auth/guard.py), and an
    unknown badge gets the same answer after the same work as a known one."""
    begin_read(session)
    user = (session.scalar(select(User).where(User.badge_number == badge_number))
            if badge_number and len(badge_number) <= 64 else None)
    end_read_transaction(session)
    ok, why = guard.check_login(session, user=user, secret_hash=user.pin_hash if user else None, secret=pin)
    if not ok:
        if user is None:
            record(session, actor=SYSTEM, action="login_failed", record_type="badge", record_id=badge_number[:64],
                   new={"why": "unknown badge"})
        else:
            record(session, actor=SYSTEM, action="login_failed", record_type="user", record_id=user.id,
                   new={"why": "wrong PIN" if why == "wrong secret" else why, "credential": "badge"})
        raise Unauthorized(guard.BADGE_REFUSED, code="login_failed", keep_audit=True)
    session.refresh(user)
    return user


def pin_matches(session: Session, *, user: User, pin: str) -> bool:
    """True when pin is the person's current PIN (re-authentication at a kiosk signing)."""
    return user.pin_hash is not None and password_matches(settings_of(session), user.pin_hash, pin)
