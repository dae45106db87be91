"""What happens when a device's release is accepted, announced to whoever subscribed: the stages do not know them.

The device history record subscribes (server/history/seal.py seals the record at release); the stages only
announce. A release can never be accepted with nobody to seal it: announcing with no subscriber refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.orm import Session

from server.models import Device
from server.security import Principal


@dataclass(frozen=True)
class ReleaseSubscriber:
    """Reads what it needs before the write transaction (prepare), then acts inside it (accepted)."""

    name: str
    prepare: Callable[[Session, Device], Any]  # in a read transaction; may take long (InfluxDB)
    accepted: Callable[[Session, Principal, Device, Any], None]  # in the acceptance's transaction
    # After the acceptance committed, given every subscriber's preparation by name (the archive reuses the points
    # the record's seal read); a failure here must not undo the release, so it is the subscriber's to handle.
    committed: Callable[[Session, int, dict[str, Any]], None] | None = None


_SUBSCRIBERS: dict[str, ReleaseSubscriber] = {}


def subscribe(subscriber: ReleaseSubscriber) -> ReleaseSubscriber:
    """Register a subscriber (once per name, at import)."""
    _SUBSCRIBERS[subscriber.name] = subscriber
    return subscriber


class NoReleaseSubscriber(RuntimeError):
    """A release would be accepted with nothing to seal its record: refused (a wiring mistake, not user input)."""


def _subscribers() -> list[ReleaseSubscriber]:
    if not _SUBSCRIBERS:
        raise NoReleaseSubscriber("no release subscriber is registered (server.registry imports server.history.seal): "
                                  "a release would leave the device history record unsealed")
    return list(_SUBSCRIBERS.values())


def prepare(session: Session, device: Device) -> dict[str, Any]:
    """Each subscriber's preparation for this device, by name."""
    return {s.name: s.prepare(session, device) for s in _subscribers()}


def accepted(session: Session, *, actor: Principal, device: Device, prepared: dict[str, Any] | None) -> None:
    """Announce an accepted release inside its transaction."""
    for s in _subscribers():
        s.accepted(session, actor, device, (prepared or {}).get(s.name))


def committed(session: Session, *, device_id: int, prepared: dict[str, Any] | None) -> None:
    """Announce that the release of a device has committed (the session has no open transaction)."""
    for s in _subscribers():
        if s.committed is not None:
            s.committed(session, device_id, prepared or {})
