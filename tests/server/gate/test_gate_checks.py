"""The release gate's rules as pure functions of a snapshot: what each finds, and that each reads only what it
declares, from records whose changes the audit chain sees (so a decision is never based on superseded state)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest

from server.audit.rows import UNSEALED_TABLES
from server.gate import checks
from server.gate.checks import CHECKS, ReasonCode, evaluate
from server.gate.inputs import (SOURCES, Ask, CaseFacts, GateSnapshot, IterationFacts, JobFacts, LotFacts,
                                MachineFacts, NonconformityFacts, OperatorFacts, ScopeFacts, SignatureFacts,
                                TriggerFacts)
from server.models import Base

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=timezone.utc)
SHA = "ab" * 32


def good() -> GateSnapshot:
    """Everything in order: the gate allows."""
    sigs = (SignatureFacts(1, "design_engineer", "c" * 64, True), SignatureFacts(2, "clinician", "c" * 64, True))
    return GateSnapshot(
        ask=Ask(machine_id="lpbf-01", job_id=7, sha=SHA, operator_id=3, now=NOW),
        head_seq=100,
        machine=MachineFacts("lpbf-01", "4.2.0", "1.0", "Magics 26", date(2027, 1, 1), date(2027, 1, 1)),
        job=JobFacts(7, "lpbf-01", "planned", "lpbf", "Ti-6Al-4V ELI", "acetabular cup",
                     LotFacts(5, "TI-2026-11", "released", 0, 5, date(2027, 6, 1))),
        scope=ScopeFacts(9, "qualified", None, date(2027, 6, 1), "4.2.0", ()),
        iterations=(IterationFacts(11, "Cup", 2, "approved", "c" * 64, "c" * 64, (SHA,), sigs, None),),
        cases=(CaseFacts(21, NOW + timedelta(days=5)),),
        operator=OperatorFacts(3, "otto", "Otto Operator", "operator", True, True))


def codes(s: GateSnapshot) -> list[str]:
    return [r.code for r in evaluate(s)]


def test_a_snapshot_in_order_is_allowed():
    assert codes(good()) == []


def test_each_rule_names_its_own_cause():
    s = good()
    cases = {
        "machine_unknown": dataclasses.replace(s, machine=None),
        "job_closed": dataclasses.replace(s, job=dataclasses.replace(s.job, state="closed")),
        "job_not_for_machine": dataclasses.replace(s, job=dataclasses.replace(s.job, machine_id="lpbf-02")),
        "qualification_expired": dataclasses.replace(s, scope=dataclasses.replace(s.scope,
                                                                                  valid_until=date(2026, 12, 3))),
        "calibration_overdue": dataclasses.replace(s, machine=dataclasses.replace(s.machine, calibration_due=None)),
        "design_changed_after_signing": dataclasses.replace(s, iterations=(dataclasses.replace(
            s.iterations[0], current_sha256="d" * 64),)),
        "build_file_not_approved": dataclasses.replace(s, ask=dataclasses.replace(s.ask, sha="ef" * 32)),
        "material_lot_invalid": dataclasses.replace(s, job=dataclasses.replace(
            s.job, lot=dataclasses.replace(s.job.lot, status="quarantined"))),
        "case_deadline_passed": dataclasses.replace(s, cases=(CaseFacts(21, NOW),)),
        "open_nonconformity": dataclasses.replace(s, nonconformities=(
            NonconformityFacts(4, "material", "powder oxygen high", "lot TI-2026-11"),)),
        "operator_not_authorised": dataclasses.replace(s, operator=dataclasses.replace(s.operator, authorised=False)),
        "operator_not_identified": dataclasses.replace(s, presence_read=True, presence_at=None),
    }
    for code, snap in cases.items():
        assert code in codes(snap), (code, codes(snap))
    seal = dataclasses.replace(s.iterations[0], signatures=(s.iterations[0].signatures[0], dataclasses.replace(
        s.iterations[0].signatures[1], seal_intact=False)))
    assert codes(dataclasses.replace(s, iterations=(seal,))) == ["design_changed_after_signing",
                                                                "build_file_not_approved"]
    req = dataclasses.replace(s.scope, state="requalification_required", open_triggers=(
        TriggerFacts("software_change", "software 4.2.0 → 4.3.0", NOW - timedelta(days=1)),))
    (reason,) = evaluate(dataclasses.replace(s, scope=req))
    assert reason.code == ReasonCode.machine_not_qualified and reason.message == \
        "Machine requires requalification: software 4.2.0 → 4.3.0 on 3 Dec"


def test_with_no_job_only_the_missing_job_is_said():
    s = dataclasses.replace(good(), job=None, presence_read=False, operator=None)
    assert codes(s) == ["job_unknown"]
    assert codes(dataclasses.replace(good(), ask=dataclasses.replace(good().ask, operator_id=None))) == \
        ["operator_unknown"]


class _Watching:
    """A snapshot that records which fields a check reads."""

    def __init__(self, snap: GateSnapshot):
        object.__setattr__(self, "_snap", snap)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        snap = object.__getattribute__(self, "_snap")
        self.read.update({"machine", "job"} if name == "buildable" else {name})
        return getattr(snap, name)


def _variants() -> list[GateSnapshot]:
    s = good()
    return [s, dataclasses.replace(s, machine=None), dataclasses.replace(s, job=None),
            dataclasses.replace(s, presence_read=True), dataclasses.replace(s, operator=None),
            dataclasses.replace(s, iterations=(dataclasses.replace(s.iterations[0], status="superseded",
                                                                   newest_number=3),))]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_a_check_reads_only_the_fields_it_declares(check):
    for snap in _variants():
        watched = _Watching(snap)
        check.run(watched)
        assert watched.read <= check.reads, f"{check.name} reads {sorted(watched.read - check.reads)} undeclared"


def test_every_field_a_check_reads_comes_from_records_the_audit_chain_watches():
    fields = {f.name for f in dataclasses.fields(GateSnapshot)}
    assert set(SOURCES) == fields, "every snapshot field names its tables in inputs.SOURCES"
    tables = set(Base.metadata.tables)
    for check in CHECKS:
        for name in check.reads:
            for table in SOURCES[name]:
                assert table in tables, f"{name}: no table {table}"
                # Sealed tables: every write to them appends to the chain in its own transaction.
                assert table not in UNSEALED_TABLES or table == "audit_entries", (check.name, name, table)


def test_the_checks_module_touches_no_database_clock_or_settings():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(checks))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"sqlalchemy", "sqlalchemy.orm", "server.db", "server.settings", "server.audit.service",
                           "time"}, imported
    assert "utcnow" not in inspect.getsource(checks) and "datetime.now" not in inspect.getsource(checks)
