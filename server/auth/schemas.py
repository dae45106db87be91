"""Request and response bodies of the auth and people API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import Day, TEXT_MAX

Role = Literal["operator", "production_manager", "quality_engineer", "design_engineer", "clinician", "admin"]


class TokenOut(BaseModel):
    """OAuth2 access token response."""

    access_token: str = Field(description="JWT to send as Authorization: Bearer")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    password_change_required: bool = Field(False, description=(
        "The password was set by an administrator: change it (POST /auth/password) before signing anything"))


class PasswordChangeIn(BaseModel):
    """Your current password and the new one."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    current_password: str = Field(max_length=200)
    new_password: str = Field(min_length=10, max_length=200, description="At least 10 characters")


class UserCreate(BaseModel):
    """A new person."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    username: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9._-]+$", description="Unique login id")
    full_name: str = Field(min_length=2, max_length=200, description="Printed name used in signatures")
    role: Role = Field(description="The person's role")
    password: str = Field(min_length=10, max_length=200, description=(
        "Initial password (at least 10 characters); the person must change it before signing anything"))


class UserUpdate(BaseModel):
    """A change to a person's account; the reason goes to the audit trail."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    active: bool | None = Field(default=None, description="Deactivate (false) or reactivate (true)")
    role: Role | None = Field(default=None, description="New role")
    unlock: bool = Field(default=False, description="Reset the failed-login counter")
    reason: str = Field(min_length=3, description="Why the change is made")


class BadgeIn(BaseModel):
    """A kiosk credential: badge number and PIN."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    badge_number: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9-]+$",
                              description="Number printed on (and scanned from) the person's badge")
    pin: str = Field(pattern=r"^[0-9]{4,12}$", description="Secret PIN, 4 to 12 digits; stored only as a hash")


class UserOut(BaseModel):
    """A person as the API shows it (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str
    role: Role
    active: bool
    failed_logins: int
    locked_until: datetime | None = Field(default=None, description="Locked until then after failed checks")
    must_change_password: bool = False
    created_at: datetime
    badge_number: str | None = Field(default=None, description="Kiosk badge number, when one is set")


class AuthorisationCreate(BaseModel):
    """Authorise a trained person on a machine."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_id: str = Field(description="Machine the person is trained on")
    training_reference: str = Field(min_length=1, description="Training record reference")
    valid_until: Day | None = Field(default=None, description="Last day the authorisation is valid")


class AuthorisationOut(BaseModel):
    """A machine authorisation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    machine_id: str
    training_reference: str
    granted_by: int
    granted_at: datetime
    valid_until: date | None
    revoked_at: datetime | None


class RevokeIn(BaseModel):
    """Reason for withdrawing an authorisation."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: str = Field(min_length=3, description="Why the authorisation is withdrawn")


class MeOut(BaseModel):
    """Who the caller is."""

    kind: Literal["user", "agent"]
    id: int
    name: str
    full_name: str
    role: str | None
    machine_ids: list[str]


class DisplayTokenCreate(BaseModel):
    """A wall display to create read-only dashboard access for."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    label: str = Field(min_length=3, max_length=100, description="Where the screen hangs, e.g. 'Hall 2 wall'")


class DisplayTokenOut(BaseModel):
    """A wall-display token (never its secret, except once at creation)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    created_by: int
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


class DisplayTokenIssued(DisplayTokenOut):
    """A new wall-display token with its secret, shown once, and the page to open on the screen."""

    token: str = Field(description="The secret (amtdisplay_…); only its SHA-256 is kept")
    url: str = Field(description="Path to open on the screen; the token travels in the fragment, never to a log")
