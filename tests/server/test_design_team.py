"""Design ownership (issue 16): a new iteration supersedes the approved one and stops the jobs built from it, so
only the design's team may add one: its author and the design engineers they (or the team) name."""

from __future__ import annotations


def _upload(plant, design_id: int, who):
    return plant.client.post(f"/api/v1/designs/{design_id}/iterations", headers=plant.h(who) if isinstance(who, str)
                             else who, data={"software_name": "Mimics", "software_version": "26", "change_note": "v2"},
                             files=[("files", ("cup.stl", b"solid v2\nendsolid\n", "model/stl"))])


def test_only_the_designs_team_adds_iterations_and_the_team_names_its_members(plant):
    ctx = plant.ready()
    other = plant.person("design_engineer2", username="dora.designer", full_name="Dora Second",
                         role="design_engineer")
    r = _upload(plant, ctx["design"]["id"], other["headers"])
    assert r.status_code == 403 and r.json() == {"code": "not_design_team", "detail": (
        f"Only the team of design {ctx['design']['id']} (Dana Designer and the engineers they named) may add an "
        f"iteration to it")}
    r = plant.client.post(f"/api/v1/designs/{ctx['design']['id']}/team", headers=other["headers"],
                          json={"username": "dora.designer"})
    assert r.status_code == 403, "nobody names themself"
    team = plant.call("POST", f"/designs/{ctx['design']['id']}/team", "design_engineer",
                      json={"username": "dora.designer"})
    assert team == ["design.engineer", "dora.designer"]
    assert _upload(plant, ctx["design"]["id"], other["headers"]).status_code == 201
    r = plant.client.post(f"/api/v1/designs/{ctx['design']['id']}/team", headers=plant.h("design_engineer"),
                          json={"username": "clinician"})
    assert r.status_code == 409 and r.json()["code"] == "not_design_engineer"
