"""Cases, designs and their immutable iterations; dual approval signatures bound to the iteration hash."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.validation.hashing import sha256_file
from server.audit.service import record, register_record_hasher, register_stored_files, settings_of
from server.auth.esign import sign
from server.errors import Conflict, Forbidden, NotFound
from server.jobs.udi import validate_gtin
from server.models import (Case, Design, DesignFile, DesignIteration, DesignTeamMember, Device, Signature,
                           StageStep, SurgeryDateChange, User, utcnow)
from server.security import Principal, content_sha256
from server.db import get_or_not_found

CATEGORIES = ("custom_made", "patient_matched")
APPROVER_ROLES = ("design_engineer", "clinician")


# A reference that carries a date (a date of birth) or a run of letters that is not hexadecimal (a name) is
# refused: pseudonyms are random, and the hospital keeps the key (R11).
_DATE_IN_REF = re.compile(r"(19|20)\d{2}-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])|"
                          r"(0[1-9]|[12]\d|3[01])-?(0[1-9]|1[0-2])-?(19|20)\d{2}")
_WORD_IN_REF = re.compile(r"(?:^|-)([A-Z]*[G-Z][A-Z]*)(?=-|$)")


def pseudonym_problem(patient_ref: str) -> str | None:
    """Why a patient reference looks like personal data (None when it does not)."""
    if _DATE_IN_REF.search(patient_ref):
        return "it contains a date (a date of birth?)"
    words = [w for w in _WORD_IN_REF.findall(patient_ref) if len(w) >= 3]
    if words:
        return f"it contains a word ({words[0]}: a name?)"
    return None


def _clinician(session: Session, username: str, what: str) -> User:
    """The active clinician with this username, or why not."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        raise Conflict(f"No active user {username!r} to name as the case's {what}", code="clinician_unknown")
    if user.role != "clinician":
        raise Conflict(f"{user.full_name} ({username}) is a {user.role.replace('_', ' ')}, not a clinician: the "
                       f"case's {what} must be a clinician", code="clinician_role")
    return user


def case_deadline(session: Session, case: Case) -> datetime:
    """When the case's devices must be delivered: the configured margin before the surgery date."""
    day = case.surgery_date - timedelta(days=settings_of(session).delivery_margin_days)
    return datetime.combine(day, time(0, 0), tzinfo=timezone.utc)


def is_case_clinician(case: Case, actor: Principal) -> bool:
    """True when actor is the case's clinician or the delegate they named."""
    return actor.kind == "user" and actor.id in (case.clinician_id, case.delegate_id)


def require_case_clinician(session: Session, case: Case, actor: Principal, doing: str) -> None:
    """Refuse a clinician who is neither the case's clinician nor their delegate (R17)."""
    if actor.role == "clinician" and not is_case_clinician(case, actor):
        named = session.get(User, case.clinician_id) if case.clinician_id else None
        who = f"{named.full_name} ({named.username})" if named else f"{case.clinician} (not linked to a user)"
        raise Forbidden(f"Only the clinician of case {case.id}, {who}, or the delegate they named may {doing}",
                        code="not_case_clinician")


def create_case(session: Session, *, actor: Principal, patient_ref: str | None, clinician_username: str | None,
                delegate_username: str | None, institution: str, surgery_date: date,
                imaging_date: date | None) -> Case:
    """Open a case under a pseudonymous patient reference (no patient name is stored); issued here if not given.
    The case names its clinician as a user (a clinician opening a case is its clinician unless told)."""
    if patient_ref is None:
        patient_ref = "P-" + secrets.token_hex(5).upper()
    elif (problem := pseudonym_problem(patient_ref)) is not None:
        raise Conflict(f"Patient reference {patient_ref[:3]}… refused: {problem}. Use a random pseudonym, or leave "
                       f"it out and the server issues one", code="patient_ref_not_pseudonymous")
    if surgery_date < utcnow().date():
        raise Conflict(f"The surgery date {surgery_date:%d %b %Y} has passed: a case is opened for a surgery "
                       f"to come", code="case_surgery_date_past")
    _check_imaging_date(imaging_date)
    if clinician_username is None:
        if actor.role != "clinician":
            raise Conflict("Name the case's clinician (clinician_username): only they accept its devices",
                           code="clinician_missing")
        clinician = session.get(User, actor.id)
    else:
        clinician = _clinician(session, clinician_username, "clinician")
    delegate = None if delegate_username is None else _clinician(session, delegate_username, "delegate")
    if delegate is not None and delegate.id == clinician.id:
        raise Conflict("The delegate must be another clinician than the case's own", code="delegate_same")
    if session.scalar(select(Case.id).where(Case.patient_ref == patient_ref)) is not None:
        raise Conflict(f"A case with patient reference {patient_ref} exists", code="case_exists")
    case = Case(patient_ref=patient_ref, clinician=clinician.full_name, clinician_id=clinician.id,
                delegate_id=None if delegate is None else delegate.id, institution=institution,
                surgery_date=surgery_date, imaging_date=imaging_date, created_by=actor.id)
    session.add(case)
    session.flush()
    record(session, actor=actor, action="case_created", record_type="case", record_id=case.id,
           new={"patient_ref": patient_ref, "clinician": clinician.username, "institution": institution,
                "surgery_date": surgery_date, "imaging_date": imaging_date,
                **({"delegate": delegate.username} if delegate else {})})
    return case


def _check_imaging_date(imaging_date: date | None) -> None:
    if imaging_date is not None and imaging_date > utcnow().date():
        raise Conflict(f"The imaging date {imaging_date:%d %b %Y} is in the future", code="imaging_date_future")


def _case(session: Session, case_id: int) -> Case:
    return get_or_not_found(session, Case, case_id, f"No case {case_id}", code="case_not_found")


def set_delegate(session: Session, *, actor: Principal, case_id: int, delegate_username: str | None) -> Case:
    """The case's clinician names (or withdraws) a delegate who may accept its devices and read their records."""
    case = _case(session, case_id)
    if actor.id != case.clinician_id:
        raise Forbidden(f"Only the clinician of case {case.id} names its delegate", code="not_case_clinician")
    delegate = None if delegate_username is None else _clinician(session, delegate_username, "delegate")
    if delegate is not None and delegate.id == case.clinician_id:
        raise Conflict("The delegate must be another clinician than the case's own", code="delegate_same")
    old = session.get(User, case.delegate_id).username if case.delegate_id else None
    case.delegate_id = None if delegate is None else delegate.id
    record(session, actor=actor, action="case_delegate_set", record_type="case", record_id=case.id,
           old={"delegate": old}, new={"delegate": None if delegate is None else delegate.username})
    return case


def set_imaging_date(session: Session, *, actor: Principal, case_id: int, imaging_date: date) -> Case:
    """Record when the patient was imaged (label data, R17); a correction keeps the old value in the audit trail."""
    case = _case(session, case_id)
    require_case_clinician(session, case, actor, "record its imaging date")
    _check_imaging_date(imaging_date)
    old, case.imaging_date = case.imaging_date, imaging_date
    record(session, actor=actor, action="case_imaging_date_set", record_type="case", record_id=case.id,
           old={"imaging_date": old}, new={"imaging_date": imaging_date})
    return case


def case_view(session: Session, case: Case) -> dict[str, Any]:
    """A case as the API shows it: the clinician's and delegate's usernames beside the printed name."""
    def username(uid: int | None) -> str | None:
        return None if uid is None else session.get(User, uid).username
    return {"id": case.id, "patient_ref": case.patient_ref, "clinician": case.clinician,
            "clinician_username": username(case.clinician_id), "delegate_username": username(case.delegate_id),
            "institution": case.institution, "surgery_date": case.surgery_date, "imaging_date": case.imaging_date,
            "created_at": case.created_at}


def surgery_change_content(c: SurgeryDateChange) -> dict[str, Any]:
    """What the signature of a surgery-date change binds to."""
    return {"id": c.id, "case_id": c.case_id, "old_date": c.old_date.isoformat(), "new_date": c.new_date.isoformat(),
            "reason": c.reason, "changed_by": c.changed_by}


@register_record_hasher("surgery_date_change")
def _rehash_surgery_change(session: Session, record_id: str) -> str | None:
    c = session.get(SurgeryDateChange, int(record_id))
    return None if c is None else content_sha256(surgery_change_content(c))


def change_surgery_date(session: Session, *, actor: Principal, case_id: int, surgery_date: date, reason: str,
                        password: str) -> Case:
    """Move a case's surgery date, with the reason and a signature; the deadlines of its devices' open steps move
    with it (R9: a job blocked by a passed date is no longer blocked for ever)."""
    case = _case(session, case_id)
    require_case_clinician(session, case, actor, "move its surgery date")
    if surgery_date < utcnow().date():
        raise Conflict(f"The new surgery date {surgery_date:%d %b %Y} has passed", code="case_surgery_date_past")
    if surgery_date == case.surgery_date:
        raise Conflict(f"The surgery date is already {surgery_date:%d %b %Y}", code="case_surgery_date_same")
    old_limit = case_deadline(session, case)
    change = SurgeryDateChange(case_id=case.id, old_date=case.surgery_date, new_date=surgery_date, reason=reason,
                               changed_by=actor.id, changed_at=utcnow())
    session.add(change)
    session.flush()
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="surgery_date_change",
               record_id=change.id, record_sha256=content_sha256(surgery_change_content(change)),
               allowed_roles=("clinician", "production_manager"))
    change.signature_id = sig.id
    case.surgery_date = surgery_date
    new_limit = case_deadline(session, case)
    moved = 0
    for step in session.scalars(select(StageStep).join(Device, Device.id == StageStep.device_id)
                                .where(Device.case_id == case.id, StageStep.state != "accepted")):
        # Capped by the old date: follow the new one; otherwise only an earlier date pulls a deadline in.
        new = new_limit if step.deadline >= old_limit or step.deadline > new_limit else step.deadline
        if new != step.deadline:
            step.deadline, moved = new, moved + 1
    record(session, actor=actor, action="case_surgery_date_changed", record_type="case", record_id=case.id,
           old={"surgery_date": change.old_date}, new={"surgery_date": surgery_date, "change_id": change.id,
                                                        "signature_id": sig.id, "deadlines_moved": moved},
           reason=reason)
    return case


def read_case(session: Session, *, actor: Principal, case_id: int) -> Case:
    """Read a case; every read of this sensitive record is audited."""
    case = _case(session, case_id)
    require_case_clinician(session, case, actor, "read it")
    record(session, actor=actor, action="case_read", record_type="case", record_id=case.id)
    return case


def create_design(session: Session, *, actor: Principal, case_id: int, name: str, process: str, material: str,
                  product_family: str, regulatory_category: str, gtin: str | None, intended_use: str,
                  anatomical_site: str) -> Design:
    """Create a design for a case."""
    if session.get(Case, case_id) is None:
        raise NotFound(f"No case {case_id}", code="case_not_found")
    if regulatory_category not in CATEGORIES:
        raise Conflict(f"Regulatory category must be one of {', '.join(CATEGORIES)}", code="category")
    if gtin is not None:
        problem = validate_gtin(gtin)
        if problem:
            raise Conflict(problem, code="gtin_invalid")
    design = Design(case_id=case_id, name=name, process=process, material=material, product_family=product_family,
                    regulatory_category=regulatory_category, gtin=gtin, intended_use=intended_use,
                    anatomical_site=anatomical_site, created_by=actor.id)
    session.add(design)
    session.flush()
    record(session, actor=actor, action="design_created", record_type="design", record_id=design.id,
           new={"case_id": case_id, "name": name, "process": process, "material": material,
                "product_family": product_family, "regulatory_category": regulatory_category, "gtin": gtin,
                "intended_use": intended_use, "anatomical_site": anatomical_site})
    return design


def on_design_team(session: Session, design: Design, actor: Principal) -> bool:
    """True when actor is the design's author or a design engineer the team named."""
    return actor.id == design.created_by or session.scalar(select(DesignTeamMember.id).where(
        DesignTeamMember.design_id == design.id, DesignTeamMember.user_id == actor.id)) is not None


def require_design_team(session: Session, design: Design, actor: Principal, doing: str) -> None:
    """Refuse a design engineer outside the design's team: a new iteration supersedes the approved one and stops
    the jobs built from it, so only the people responsible for the design make one."""
    if not on_design_team(session, design, actor):
        author = session.get(User, design.created_by)
        raise Forbidden(f"Only the team of design {design.id} ({author.full_name} and the engineers they named) may "
                        f"{doing}", code="not_design_team")


def add_to_team(session: Session, *, actor: Principal, design_id: int, username: str) -> list[str]:
    """Someone on the design's team names another design engineer to it; the team's user ids after."""
    design = get_design(session, design_id=design_id)
    require_design_team(session, design, actor, "name its team")
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active or user.role != "design_engineer":
        raise Conflict(f"{username!r} is not an active design engineer", code="not_design_engineer")
    if not on_design_team(session, design, principal_of(user)):
        session.add(DesignTeamMember(design_id=design.id, user_id=user.id, added_by=actor.id, added_at=utcnow()))
        session.flush()
        record(session, actor=actor, action="design_team_member_added", record_type="design", record_id=design.id,
               new={"username": username})
    return team_of(session, design)


def team_of(session: Session, design: Design) -> list[str]:
    """The usernames of a design's team, its author first."""
    members = session.scalars(select(User.username).join(DesignTeamMember, DesignTeamMember.user_id == User.id)
                              .where(DesignTeamMember.design_id == design.id).order_by(DesignTeamMember.id))
    return [session.get(User, design.created_by).username, *members]


def principal_of(user: User) -> Principal:
    """A user as a principal, for asking the rules about them."""
    return Principal(kind="user", id=user.id, name=user.username, full_name=user.full_name, role=user.role)


def get_design(session: Session, *, design_id: int) -> Design:
    """The design with this id, or NotFound."""
    return get_or_not_found(session, Design, design_id, f"No design {design_id}", code="design_not_found")


def get_iteration(session: Session, *, iteration_id: int) -> DesignIteration:
    """The design iteration with this id, or NotFound."""
    return get_or_not_found(session, DesignIteration, iteration_id, f"No design iteration {iteration_id}", code="iteration_not_found")


def iteration_content(design: Design, it: DesignIteration) -> dict[str, Any]:
    """The signable content of an iteration: what it is, the exact bytes (hashes) of its files and the label's
    intended use and site (so the approvers sign what the label will say)."""
    content = {"iteration_id": it.id, "design_id": design.id, "case_id": design.case_id, "number": it.number,
               "software": {"name": it.software_name, "version": it.software_version},
               "files": [{"name": f.file_name, "sha256": f.sha256, "size": f.size_bytes} for f in it.files]}
    if design.intended_use is not None:  # designs from before the label data keep their signed content
        content["label"] = {"intended_use": design.intended_use, "anatomical_site": design.anatomical_site}
    return content


@register_stored_files
def _design_files(session: Session):
    store = Path(settings_of(session).file_store)
    for f in session.scalars(select(DesignFile).order_by(DesignFile.id)):
        yield f"design file {f.file_name} (iteration {f.iteration_id})", store / f.sha256, f.sha256


@register_record_hasher("design_iteration")
def _rehash_iteration(session: Session, record_id: str) -> str | None:
    it = session.get(DesignIteration, int(record_id))
    if it is None:
        return None
    session.refresh(it, ["files"])
    return content_sha256(iteration_content(session.get(Design, it.design_id), it))


def add_iteration(session: Session, *, actor: Principal, design_id: int, software_name: str,
                  software_version: str, change_note: str, files: list[tuple[str, Path]]) -> DesignIteration:
    """Store a new iteration; the server hashes each file with the edge's code and keeps it by hash."""
    design = get_design(session, design_id=design_id)
    require_design_team(session, design, actor, "add an iteration to it")
    if not files:
        raise Conflict("A design iteration needs at least one file", code="no_files")
    names = [n for n, _ in files]
    if len(set(names)) != len(names):
        raise Conflict("File names within an iteration must be unique", code="duplicate_file_name")
    store = Path(settings_of(session).file_store)
    store.mkdir(parents=True, exist_ok=True)
    previous = list(session.scalars(select(DesignIteration).where(DesignIteration.design_id == design.id)
                                    .order_by(DesignIteration.number)))
    it = DesignIteration(design_id=design.id, number=(previous[-1].number + 1) if previous else 1,
                         software_name=software_name, software_version=software_version, change_note=change_note,
                         content_sha256="", status="draft", created_by=actor.id)
    session.add(it)
    session.flush()
    for name, path in files:
        digest = sha256_file(path)
        size = os.path.getsize(path)
        target = store / digest
        if not target.exists():
            shutil.copyfile(path, target)
        session.add(DesignFile(iteration_id=it.id, file_name=name, sha256=digest, size_bytes=size))
    session.flush()
    session.refresh(it, ["files"])
    it.content_sha256 = content_sha256(iteration_content(design, it))
    record(session, actor=actor, action="design_iteration_created", record_type="design_iteration",
           record_id=it.id, new={"design_id": design.id, "number": it.number, "content_sha256": it.content_sha256,
                                 "files": [[f.file_name, f.sha256] for f in it.files],
                                 "software": f"{software_name} {software_version}"}, reason=change_note)
    for old in previous:
        if old.status != "superseded":
            # Nothing is voided silently: the earlier iteration keeps its signatures but is marked.
            record(session, actor=actor, action="design_iteration_superseded", record_type="design_iteration",
                   record_id=old.id, old={"status": old.status}, new={"status": "superseded",
                                                                      "superseded_by": it.id},
                   reason=f"iteration {it.number} created: {change_note}")
            old.status = "superseded"
    return it


def iteration_signatures(session: Session, *, iteration_id: int) -> list[Signature]:
    """Signatures on one iteration, oldest first."""
    return list(session.scalars(select(Signature).where(Signature.record_type == "design_iteration",
                                                        Signature.record_id == str(iteration_id))
                                .order_by(Signature.id)))


def sign_iteration(session: Session, *, actor: Principal, iteration_id: int, password: str) -> Signature:
    """Approve an iteration (design engineer or clinician); both make it approved."""
    it = get_iteration(session, iteration_id=iteration_id)
    design = session.get(Design, it.design_id)
    if it.status == "superseded":
        raise Conflict(f"Design iteration {it.number} of design {design.id} is superseded; sign the latest "
                       f"iteration", code="iteration_superseded")
    current = content_sha256(iteration_content(design, it))
    if current != it.content_sha256:
        raise Conflict(f"Design iteration {it.id} no longer matches its recorded hash", code="iteration_tampered")
    require_case_clinician(session, session.get(Case, design.case_id), actor, "approve its designs")
    existing = iteration_signatures(session, iteration_id=it.id)
    if any(s.user_id == actor.id for s in existing):
        raise Conflict(f"{actor.full_name} has already signed design iteration {it.id}", code="already_signed")
    if any(s.signer_role == actor.role for s in existing):
        raise Conflict(f"Design iteration {it.id} already has a {actor.role.replace('_', ' ')} approval",
                       code="already_signed")
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="design_iteration",
               record_id=it.id, record_sha256=current, allowed_roles=APPROVER_ROLES)
    roles = {s.signer_role for s in existing} | {sig.signer_role}
    if set(APPROVER_ROLES) <= roles:
        it.status = "approved"
        record(session, actor=actor, action="design_iteration_approved", record_type="design_iteration",
               record_id=it.id, old={"status": "draft"}, new={"status": "approved",
                                                              "content_sha256": it.content_sha256})
    return sig
