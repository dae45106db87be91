"""Retained samples (coupons and retained devices): where each is stored, in what condition, until when, and every
step of its custody. Moving one is recorded with a reason; withdrawing one for a destructive test and disposing of
one after its retention each need a quality engineer's electronic signature, bound to that custody step."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher
from server.auth.esign import sign
from server.db import get_or_not_found
from server.errors import Conflict
from server.jobs.service import get_device
from server.models import Device, RetainedSample, SampleCustody, utcnow
from server.retention.service import of_device
from server.security import Principal, content_sha256


def get_sample(session: Session, sample_id: int) -> RetainedSample:
    """The sample, or NotFound."""
    return get_or_not_found(session, RetainedSample, sample_id, f"No retained sample {sample_id}",
                            code="sample_not_found")


def register(session: Session, *, actor: Principal, device_code: str, location: str, condition: str,
             retain_until: date | None) -> RetainedSample:
    """Keep a coupon or a device as a retained sample; retain_until defaults to the device's own retention date."""
    device = get_device(session, device_code=device_code)
    if session.scalar(select(RetainedSample.id).where(RetainedSample.device_id == device.id)) is not None:
        raise Conflict(f"{device_code} is already a retained sample", code="sample_exists")
    if retain_until is None:
        kept = of_device(session, device.id)
        if kept is None:
            raise Conflict(f"{device_code} has no retention date of its own (not released): give retain_until",
                           code="sample_retain_until")
        retain_until = kept.retain_until
    if retain_until < utcnow().date():
        raise Conflict(f"retain_until {retain_until} is in the past", code="sample_retain_until")
    sample = RetainedSample(device_id=device.id, location=location, condition=condition, retain_until=retain_until,
                            state="stored", registered_by=actor.id)
    session.add(sample)
    session.flush()
    _step(session, actor, sample, "registered", reason=f"kept as a retained sample ({condition})", to=location)
    return sample


def _step(session: Session, actor: Principal, sample: RetainedSample, action: str, *, reason: str,
          frm: str | None = None, to: str | None = None, reference: str | None = None) -> SampleCustody:
    step = SampleCustody(sample_id=sample.id, action=action, by_user_id=actor.id, from_location=frm, to_location=to,
                         reason=reason, reference=reference)
    session.add(step)
    session.flush()
    record(session, actor=actor, action=f"sample_{action}", record_type="retained_sample", record_id=sample.id,
           new={"custody_id": step.id, "from": frm, "to": to, "reason": reason, "reference": reference,
                "state": sample.state})
    return step


def _stored(sample: RetainedSample, verb: str) -> None:
    if sample.state != "stored":
        raise Conflict(f"Retained sample {sample.id} is {sample.state}: it cannot be {verb}", code="sample_state")


def move(session: Session, *, actor: Principal, sample_id: int, to_location: str, reason: str) -> RetainedSample:
    """Move a stored sample to another location."""
    sample = get_sample(session, sample_id)
    _stored(sample, "moved")
    frm, sample.location = sample.location, to_location
    _step(session, actor, sample, "moved", reason=reason, frm=frm, to=to_location)
    return sample


def custody_content(step: SampleCustody, device_code: str) -> dict[str, Any]:
    """What a signature on a custody step binds to."""
    return {"id": step.id, "sample_id": step.sample_id, "device_code": device_code, "action": step.action,
            "from": step.from_location, "reason": step.reason, "reference": step.reference}


@register_record_hasher("sample_custody")
def _rehash(session: Session, record_id: str) -> str | None:
    step = session.get(SampleCustody, int(record_id))
    if step is None:
        return None
    sample = session.get(RetainedSample, step.sample_id)
    return content_sha256(custody_content(step, session.get(Device, sample.device_id).device_code))


def _signed_step(session: Session, actor: Principal, sample: RetainedSample, action: str, *, reason: str,
                 reference: str | None, password: str | None, what: str) -> SampleCustody:
    if not password:
        raise Conflict(f"{what} retained sample {sample.id} needs a quality engineer's signature (password)",
                       code="sample_signature")
    frm = sample.location
    sample.state = "withdrawn" if action == "withdrawn" else "disposed"
    step = _step(session, actor, sample, action, reason=reason, frm=frm, reference=reference)
    code = session.get(Device, sample.device_id).device_code
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="sample_custody",
               record_id=step.id, record_sha256=content_sha256(custody_content(step, code)),
               allowed_roles=("quality_engineer",))
    step.signature_id = sig.id
    return step


def withdraw(session: Session, *, actor: Principal, sample_id: int, reason: str, test_reference: str,
             password: str | None) -> RetainedSample:
    """Take a stored sample out for a destructive test (signed); it is not stored any more."""
    sample = get_sample(session, sample_id)
    _stored(sample, "withdrawn")
    _signed_step(session, actor, sample, "withdrawn", reason=reason, reference=test_reference, password=password,
                 what="Withdrawing")
    return sample


def dispose(session: Session, *, actor: Principal, sample_id: int, reason: str, password: str | None) -> RetainedSample:
    """Dispose of a stored sample whose retention has ended (signed)."""
    sample = get_sample(session, sample_id)
    _stored(sample, "disposed of")
    if sample.retain_until >= utcnow().date():
        raise Conflict(f"Retained sample {sample.id} is under retention until {sample.retain_until}: it may not be "
                       "disposed of before then", code="sample_under_retention")
    _signed_step(session, actor, sample, "disposed", reason=reason, reference=None, password=password,
                 what="Disposing of")
    return sample


def custody(session: Session, sample_id: int) -> list[SampleCustody]:
    """The sample's custody steps, oldest first."""
    return list(session.scalars(select(SampleCustody).where(SampleCustody.sample_id == sample_id)
                                .order_by(SampleCustody.id)))


def list_samples(session: Session, *, job_id: int | None = None, state: str | None = None) -> list[RetainedSample]:
    """Retained samples, optionally of one job or in one state."""
    q = select(RetainedSample).join(Device, Device.id == RetainedSample.device_id).order_by(RetainedSample.id)
    if job_id is not None:
        q = q.where(Device.job_id == job_id)
    if state is not None:
        q = q.where(RetainedSample.state == state)
    return list(session.scalars(q))


def describe(session: Session, sample: RetainedSample) -> dict[str, Any]:
    """The sample with its device, job and custody, as the API and the DHR show it."""
    device = session.get(Device, sample.device_id)
    return {"id": sample.id, "device_code": device.device_code, "kind": device.kind, "job_id": device.job_id,
            "location": sample.location, "condition": sample.condition, "retain_until": sample.retain_until,
            "state": sample.state, "registered_at": sample.registered_at,
            "custody": [{"action": s.action, "at": s.at, "by_user_id": s.by_user_id, "from_location": s.from_location,
                         "to_location": s.to_location, "reason": s.reason, "reference": s.reference,
                         "signature_id": s.signature_id} for s in custody(session, sample.id)]}
