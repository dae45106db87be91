"""Walking a device through its stage gates over the API (shared by the history, stage-evidence and walk tests)."""

from __future__ import annotations

PASSWORD = "correct-horse-battery"  # the seeded people's password (tests/server/conftest.py)
PERFORM = {"build": "operator", "post_processing": "operator", "cleaning": "operator", "sterilization": "operator",
           "inspection": "quality_engineer", "release": "quality_engineer"}
ACCEPT = {"build": "production_manager", "post_processing": "production_manager", "cleaning": "quality_engineer",
          "sterilization": "quality_engineer", "inspection": "quality_engineer2", "release": "quality_engineer2"}
STAGES = ("build", "post_processing", "cleaning", "sterilization", "inspection", "release")


def step_of(plant, code: str, stage: str) -> dict:
    """The device's step of that stage, as the API shows it."""
    return {s["stage"]: s for s in plant.call("GET", f"/devices/{code}/stages", "operator")}[stage]


def run_stage(plant, code: str, stage: str) -> None:
    """Start, complete (performer's signature) and accept (a second person's signature) one stage of a device."""
    step = step_of(plant, code, stage)
    plant.call("POST", f"/stages/steps/{step['id']}/start", PERFORM[stage])
    plant.call("POST", f"/stages/steps/{step['id']}/complete", PERFORM[stage],
               json={"result": f"{stage.replace('_', ' ')} done", "password": PASSWORD})
    plant.call("POST", f"/stages/steps/{step['id']}/accept", ACCEPT[stage],
               json={"judgement": "complete and conforming", "password": PASSWORD})


def backdate_job(app, job_id: int, at) -> None:
    """Set a job's creation time (test set-up: the job was planned before the data the test feeds)."""
    from sqlalchemy import text

    with app.state.sessionmaker() as s, s.begin():
        s.execute(text("UPDATE jobs SET created_at = :at WHERE id = :id"),
                  {"at": at.replace(tzinfo=None) if s.get_bind().dialect.name == "sqlite" else at, "id": job_id})


def sla_with_resin_excursion(profile, excursion: tuple[float, float]):
    """The SLA profile's state at t, with the resin at 35 °C (above warning 34, below alarm 36) within excursion."""
    def state(t: float) -> dict:
        st = profile.state(t)
        if excursion[0] <= t < excursion[1]:
            st["resin_temp_c"] = 35.0
        return st
    return state


def run_server_cli(plant, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`amtrace-server ARGS` in this process against the plant's database, InfluxDB and file store, as an operator
    of the plant runs it (a signature's password from AMTRACE_SIGNATURE_PASSWORD); exit code and stdout + stderr."""
    from server.cli import main as server_cli

    s = plant.app.state.settings
    for k, v in {"AMTRACE_DATABASE_URL": s.database_url, "AMTRACE_INFLUX_URL": s.influx_url,
                 "AMTRACE_INFLUX_DATABASE": s.influx_database, "AMTRACE_FILE_STORE": s.file_store,
                 "AMTRACE_SIGNATURE_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    rc = server_cli(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err
