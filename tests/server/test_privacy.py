"""Privacy (R11, issue 20 item 7): patient references are pseudonyms, not names or dates of birth, and the
operator's answers carry no patient reference."""

from __future__ import annotations

from datetime import date, timedelta

import pytest


def _case(plant, **kw):
    body = {"institution": "University Hospital",
            "surgery_date": str(date.today() + timedelta(days=30)), **kw}
    return plant.client.post("/api/v1/cases", headers=plant.h("clinician"), json=body)


@pytest.mark.parametrize("ref, why", [
    ("SMITH-JOHN-1970-01-31", "it contains a date (a date of birth?)"),
    ("P-19700131", "it contains a date (a date of birth?)"),
    ("P-31011970", "it contains a date (a date of birth?)"),
    ("MUELLER-7", "it contains a word (MUELLER: a name?)"),
    ("P-JOHN-42", "it contains a word (JOHN: a name?)"),
])
def test_a_reference_that_looks_like_a_name_or_a_date_of_birth_is_refused(plant, ref, why):
    r = _case(plant, patient_ref=ref)
    assert r.status_code == 409 and r.json()["code"] == "patient_ref_not_pseudonymous"
    assert why in r.json()["detail"] and ref not in r.json()["detail"], "the refusal does not echo the reference"


def test_the_server_issues_a_pseudonym_when_none_is_given_and_accepts_random_ones(plant):
    issued = _case(plant).json()
    assert issued["patient_ref"].startswith("P-") and len(issued["patient_ref"]) == 12
    assert _case(plant, patient_ref="P-4F7A2C91E0").status_code == 201
