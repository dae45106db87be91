"""The release gate's rules: pure functions of a GateSnapshot, each returning the reasons it finds.

No check reads the database, the clock or the settings: everything comes from the snapshot
(server/gate/inputs.py), so the kiosk's preview and the recorded decision run exactly the same rules. Each
check declares the snapshot fields it reads (tests/server/gate/test_gate_checks.py holds it to them). A new
rule = a function here, its entry in CHECKS, and its reason code in ReasonCode (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Callable

from server.gate.inputs import GateSnapshot
from server.materials.service import lot_problems


class ReasonCode(StrEnum):
    """Every refusal reason the gate can give (the codes the kiosk, the agent and the DHR act on)."""

    machine_unknown = "machine_unknown"
    job_unknown = "job_unknown"
    job_not_for_machine = "job_not_for_machine"
    job_closed = "job_closed"
    machine_not_qualified = "machine_not_qualified"
    qualification_expired = "qualification_expired"
    calibration_overdue = "calibration_overdue"
    maintenance_overdue = "maintenance_overdue"
    design_superseded = "design_superseded"
    design_not_approved = "design_not_approved"
    design_changed_after_signing = "design_changed_after_signing"
    build_file_not_approved = "build_file_not_approved"
    material_lot_invalid = "material_lot_invalid"
    case_deadline_passed = "case_deadline_passed"
    open_nonconformity = "open_nonconformity"
    operator_unknown = "operator_unknown"
    operator_not_authorised = "operator_not_authorised"
    operator_not_identified = "operator_not_identified"


@dataclass(frozen=True)
class Reason:
    """One refusal reason: its code and what to tell the operator."""

    code: ReasonCode
    message: str

    def as_dict(self) -> dict[str, str]:
        """As stored with the decision."""
        return {"code": str(self.code), "message": self.message}


@dataclass(frozen=True)
class Check:
    """A rule and the snapshot fields it reads."""

    name: str
    reads: frozenset[str]
    run: Callable[[GateSnapshot], list[Reason]]


# Triggers whose own words already carry their date ("qualification expired on 25 Nov 2026"): adding
# the day the trigger was noted would read "expired on 25 Nov 2026 on 26 Nov".
_DATED_TRIGGERS = frozenset({"qualification_expired", "calibration_expired"})


def _day(d: date | datetime) -> str:
    return f"{d.day} {d:%b}"


def _full(d: date | datetime) -> str:
    return f"{d.day} {d:%b %Y}"


def _a(noun: str) -> str:
    """The noun with its indefinite article: 'an admin', 'a clinician'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def job_and_machine(s: GateSnapshot) -> list[Reason]:
    """The machine and the job exist, the job is planned for this machine and still open."""
    out = []
    if s.machine is None:
        out.append(Reason(ReasonCode.machine_unknown, f"Machine {s.ask.machine_id} is not registered"))
    if s.job is None:
        out.append(Reason(ReasonCode.job_unknown, f"Job {s.ask.job_id} does not exist"))
    if s.machine is not None and s.job is not None:
        if s.job.machine_id != s.machine.id:
            out.append(Reason(ReasonCode.job_not_for_machine,
                              f"Job {s.job.id} is planned for machine {s.job.machine_id}, not {s.machine.id}"))
        elif s.job.state == "closed":
            out.append(Reason(ReasonCode.job_closed, f"Job {s.job.id} is already closed"))
    return out


def machine_qualified(s: GateSnapshot) -> list[Reason]:
    """Qualified for the job's process, material and product family; in date; calibrated; maintained."""
    if not s.buildable:
        return []
    machine, job, scope, today = s.machine, s.job, s.scope, s.ask.now.date()
    out = []
    what = f"{job.process} / {job.material} / {job.product_family}"
    if scope is None or scope.state == "unqualified":
        out.append(Reason(ReasonCode.machine_not_qualified, f"Machine {machine.id} is not qualified for {what}"))
    else:
        if scope.state in ("requalification_required", "requalifying"):
            because = "; ".join(t.detail if t.kind in _DATED_TRIGGERS else f"{t.detail} on {_day(t.occurred_at)}"
                                for t in reversed(scope.open_triggers)) or scope.state_reason or \
                "requalification pending"
            prefix = "requires requalification" if scope.state == "requalification_required" else \
                "is being requalified"
            out.append(Reason(ReasonCode.machine_not_qualified, f"Machine {prefix}: {because}"))
        elif scope.state == "suspended":
            out.append(Reason(ReasonCode.machine_not_qualified,
                              f"Machine {machine.id} is suspended for {what}: {scope.state_reason}"))
        if scope.valid_until is not None and scope.valid_until < today:
            out.append(Reason(ReasonCode.qualification_expired, f"Qualification of machine {machine.id} for {what} "
                                                                f"expired on {_full(scope.valid_until)}"))
    if machine.calibration_due is None or machine.calibration_due < today:
        due = _full(machine.calibration_due) if machine.calibration_due else "never recorded"
        out.append(Reason(ReasonCode.calibration_overdue, f"Machine calibration is out of date (due {due})"))
    if machine.maintenance_due is None or machine.maintenance_due < today:
        due = _full(machine.maintenance_due) if machine.maintenance_due else "never recorded"
        out.append(Reason(ReasonCode.maintenance_overdue,
                          f"Preventive maintenance of the machine is overdue (due {due})"))
    return out


def designs_approved(s: GateSnapshot) -> list[Reason]:
    """Each design iteration is the latest, signed by both roles, unchanged since; the build file is one of them."""
    if not s.buildable:
        return []
    out = []
    approved: set[str] = set()
    for it in s.iterations:
        name = f"Design '{it.design_name}' iteration {it.number}"
        roles = {sig.signer_role for sig in it.signatures}
        if it.status == "superseded":
            out.append(Reason(ReasonCode.design_superseded, f"{name} was superseded by iteration {it.newest_number}; "
                                                            f"the job must use the approved latest iteration"))
            continue
        missing = [label for role, label in (("design_engineer", "design engineer"), ("clinician", "clinician"))
                   if role not in roles]
        if missing:
            out.append(Reason(ReasonCode.design_not_approved,
                              f"{name} is not approved: {' and '.join(missing)} signature missing"))
            continue
        # The content hash is recomputed from the current rows and every seal checked at each decision:
        # nothing is taken from a cache.
        if any(sig.record_sha256 != it.current_sha256 or not sig.seal_intact for sig in it.signatures):
            out.append(Reason(ReasonCode.design_changed_after_signing,
                              f"{name} no longer matches what was signed; it needs a new iteration and new signatures"))
            continue
        approved.update(it.file_hashes)
    if s.ask.sha not in approved:
        out.append(Reason(ReasonCode.build_file_not_approved, f"Build file (SHA-256 {s.ask.sha[:12]}…) does not "
                                                              f"match any approved file of job {s.job.id}"))
    return out


def material_lot_valid(s: GateSnapshot) -> list[Reason]:
    """The job's material lot is released, in date and within its reuse limit."""
    if not s.buildable:
        return []
    return [Reason(ReasonCode.material_lot_invalid, p[0].upper() + p[1:])
            for p in lot_problems(s.job.lot, today=s.ask.now.date())]


def case_deadlines(s: GateSnapshot) -> list[Reason]:
    """No case of the job is past its delivery deadline."""
    if not s.buildable:
        return []
    # The case by number and its deadline only, not the patient reference or the surgery date (R11).
    return [Reason(ReasonCode.case_deadline_passed, f"Case {c.id}: delivery deadline {_full(c.deadline)} has passed")
            for c in s.cases if s.ask.now >= c.deadline]


def no_open_nonconformity(s: GateSnapshot) -> list[Reason]:
    """No open nonconformity on the job, its machine, its lot or its design iterations."""
    if not s.buildable:
        return []
    return [Reason(ReasonCode.open_nonconformity, f"Open nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) on "
                                                  f"{nc.scope_words} must be dispositioned first: {nc.description}")
            for nc in s.nonconformities]


def operator_authorised(s: GateSnapshot) -> list[Reason]:
    """An active operator, authorised on this machine, is named (judged once the machine and the job exist)."""
    if s.machine is None or s.job is None:
        return []
    user, operator_id = s.operator, s.ask.operator_id
    if operator_id is None:
        return [Reason(ReasonCode.operator_unknown, "No operator was named for this build")]
    if user is None or not user.active:
        return [Reason(ReasonCode.operator_unknown, f"Operator {operator_id} is not an active user")]
    if user.role != "operator":
        return [Reason(ReasonCode.operator_not_authorised,
                       f"{user.full_name} is {_a(user.role.replace('_', ' '))}, not an operator")]
    if not user.authorised:
        return [Reason(ReasonCode.operator_not_authorised,
                       f"Operator {user.full_name} is not authorised on machine {s.machine.id}")]
    return []


def operator_present(s: GateSnapshot) -> list[Reason]:
    """Someone asking on the operator's behalf names an operator who identified at the kiosk recently; else
    anyone holding an agent token could name any authorised operator for a build nobody attended."""
    if not s.presence_read or s.presence_at is not None:
        return []
    a = s.ask
    return [Reason(ReasonCode.operator_not_identified,
                   f"{s.operator.full_name} has not identified at the kiosk for job {a.job_id} on machine "
                   f"{a.machine_id} in the last {s.presence_minutes} minutes: scan the job at the kiosk with "
                   f"your badge")]


_BUILD = frozenset({"ask", "machine", "job"})

# In the order the reasons are shown.
CHECKS: tuple[Check, ...] = (
    Check("job_and_machine", _BUILD, job_and_machine),
    Check("machine_qualified", _BUILD | {"scope"}, machine_qualified),
    Check("designs_approved", _BUILD | {"iterations"}, designs_approved),
    Check("material_lot_valid", _BUILD, material_lot_valid),
    Check("case_deadlines", _BUILD | {"cases"}, case_deadlines),
    Check("no_open_nonconformity", _BUILD | {"nonconformities"}, no_open_nonconformity),
    Check("operator_authorised", _BUILD | {"operator"}, operator_authorised),
    Check("operator_present", frozenset({"ask", "operator", "presence_read", "presence_at", "presence_minutes"}),
          operator_present),
)


def evaluate(snapshot: GateSnapshot) -> list[Reason]:
    """Every reason the snapshot gives to refuse the build (empty: allowed)."""
    return [r for check in CHECKS for r in check.run(snapshot)]
