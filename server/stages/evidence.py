"""Release evidence: the cycles a device's route requires, each with a passing, signed, covered verdict.

One rule, used by the stage gates (completion and acceptance of a cycle stage, and start, completion and
acceptance of release) so that "released" can only mean the required cleaning, sterilization and
post-processing cycles ran on the device's load and were judged pass on readings covering the cycle."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from server.audit.service import settings_of
from server.cycles.service import cycle_content, cycles_of_device
from server.models import Device, Job, ProcessCycle, Signature
from server.security import content_sha256

STREAMED = ("steam", "ethylene_oxide", "heat_treatment", "cleaning")  # judged on coverage of the window


def cycle_problem(session: Session, c: ProcessCycle) -> str | None:
    """Why this cycle's verdict is not release evidence, or None when it is."""
    if c.state != "evaluated" or c.verdict is None:
        return f"is {c.state}, without a verdict"
    if c.verdict != "pass":
        failed = [x["name"] for x in c.evaluation.get("criteria", []) if not x.get("passed")]
        return f"failed ({', '.join(failed) or c.verdict})"
    sig = session.get(Signature, c.performed_signature_id) if c.performed_signature_id else None
    if sig is None:
        return "has no performer's signature"
    if sig.record_sha256 != content_sha256(cycle_content(session, c)):
        return "does not match its signature (the record was changed after it was signed)"
    criteria = {x["name"]: x for x in c.evaluation.get("criteria", [])}
    if c.process in STREAMED and not criteria.get("data_coverage", {}).get("passed"):
        return "was judged without checking that its readings cover the whole cycle"
    return None


def missing(session: Session, *, device: Device, stages: Iterable[str] | None = None) -> list[str]:
    """What is missing from the device's release evidence (for the given route stages, or all of them)."""
    job = session.get(Job, device.job_id)
    route = settings_of(session).route_for(job.product_family)
    wanted = set(stages) if stages is not None else set(route)
    cycles = cycles_of_device(session, device_id=device.id)
    reasons = []
    for stage, processes in route.items():
        if stage not in wanted:
            continue
        name = stage.replace("_", "-")
        mine = [c for c in cycles if c.process in processes]
        if not mine:
            reasons.append(f"{name}: no {' or '.join(p.replace('_', ' ') for p in processes)} cycle recorded "
                           f"for this device")
            continue
        last = mine[-1]  # a later cycle supersedes an earlier one (rework): the latest must pass
        problem = cycle_problem(session, last)
        if problem:
            reasons.append(f"{name}: {last.process.replace('_', ' ')} cycle {last.id} on {last.machine_id} {problem}")
    return reasons
