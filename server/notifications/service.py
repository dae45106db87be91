"""Notifications (R16: stop, record, notify designers and production): one per person, kept until read."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.commitwatch import CommitWatch
from server.errors import Forbidden, NotFound
from server.models import Notification, User, utcnow
from server.security import Principal


def notify(session: Session, *, user_ids: set[int], kind: str, message: str, record_type: str,
           record_id: str | int) -> list[Notification]:
    """Leave a notice for each of these people (inactive accounts get none)."""
    active = set(session.scalars(select(User.id).where(User.id.in_(user_ids), User.active.is_(True))))
    out = [Notification(user_id=u, kind=kind, message=message[:2000], record_type=record_type,
                        record_id=str(record_id), created_at=utcnow()) for u in sorted(active)]
    session.add_all(out)
    return out


def users_with_roles(session: Session, roles: tuple[str, ...]) -> set[int]:
    """Ids of the active people with one of these roles."""
    return set(session.scalars(select(User.id).where(User.role.in_(roles), User.active.is_(True))))


def mine(session: Session, *, user_id: int, unread_only: bool = False) -> list[Notification]:
    """A person's notifications, newest first."""
    q = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        q = q.where(Notification.read_at.is_(None))
    return list(session.scalars(q.order_by(Notification.id.desc()).limit(200)))


def mark_read(session: Session, *, actor: Principal, notification_id: int) -> Notification:
    """Mark one of the caller's notifications read (someone else's is refused)."""
    n = session.get(Notification, notification_id)
    if n is None:
        raise NotFound(f"No notification {notification_id}", code="notification_not_found")
    if n.user_id != actor.id:
        raise Forbidden(f"Notification {notification_id} is not yours", code="notification_not_yours")
    n.read_at = n.read_at or utcnow()
    return n


def after(session: Session, *, user_id: int, after_id: int) -> list[Notification]:
    """A person's notifications newer than after_id, oldest first (what a stream has not sent yet)."""
    return list(session.scalars(select(Notification).where(Notification.user_id == user_id, Notification.id > after_id)
                                .order_by(Notification.id).limit(200)))


def latest_id(session: Session, *, user_id: int) -> int:
    """The id of a person's newest notification (0 when none)."""
    return session.scalar(select(func.coalesce(func.max(Notification.id), 0)).where(Notification.user_id == user_id))


class NotificationWatch(CommitWatch):
    """Wakes a person's notification streams when a commit added (or marked) one of their notices."""

    channel = "amtrace_notifications"

    def keys_of(self, obj: object) -> str | None:
        """A notification wakes its person's streams."""
        return str(obj.user_id) if isinstance(obj, Notification) else None
