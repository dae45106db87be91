"""`make demo` tells one consistent story (issue 13), checked by running it: deploy/local/stack.py up in a folder of
its own with the quick tempo (the same story, shorter machine programs). The printer waits for the release gate and
builds after it; the devices go through a furnace, a washer and a sterilizer, each a recorded cycle with a verdict;
inspection and release follow; the sealed record verifies with the commands the demo prints."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")

pytestmark = pytest.mark.timeout(900)


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)


def test_the_demo_builds_after_the_gate_walks_every_cycle_and_seals_a_record_that_verifies(tmp_path):
    demo = tmp_path / "demo"
    env = {**os.environ, "AMTRACE_DEMO_DIR": str(demo), "AMTRACE_DEMO_TEMPO": "quick"}
    env.pop("AMTRACE_DEMO_PORT_BASE", None)
    up = subprocess.run([PY, "deploy/local/stack.py", "up"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        code = re.search(r"dhr verify (AMT-\d{4}-\d{6})", up.stdout).group(1)
        assert "audit verify" in up.stdout and f". {demo / 'server-cli.env'}" in up.stdout

        def told():
            f = demo / "story.json"
            state = json.loads(f.read_text()) if f.exists() else {}
            return state if state.get("done") or state.get("failed") else None
        story = wait_until(told, 600, "the demo's story to end", interval=2)
        steps = [s["text"] for s in story["steps"]]
        assert not story.get("failed"), "\n".join(steps)
        order = ["build finished", "furnace-01: cycle", "post processing: performed", "washer-01: cycle",
                 "cleaning: performed", "sterilizer-01: cycle", "sterilization: performed", "inspection: performed",
                 "release: performed", "released and sealed"]
        firsts = [next(i for i, t in enumerate(steps) if key in t) for key in order]
        assert firsts == sorted(firsts), "\n".join(steps)
        assert [t for t in steps if " PASS " in t] and not [t for t in steps if " FAIL" in t]
        assert len([t for t in steps if " PASS " in t]) == 3, "furnace, washer and sterilizer cycles, each judged"
        assert story["verify_audit"] == 0 and story["verify_dhr"] == 0

        # The printed commands work as printed.
        cli_env = dict(shlex.split(line)[0].split("=", 1) for line in (demo / "server-cli.env").read_text().splitlines())
        for argv in (["audit", "verify"], ["dhr", "verify", code]):
            r = subprocess.run([str(ROOT / ".venv" / "bin" / "amtrace-server"), *argv], cwd=ROOT,
                               env={**os.environ, **cli_env}, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr

        # The printer built only after the gate allowed the job: its first layer is later than the decision.
        stack = json.loads((demo / "stack.json").read_text())
        api = f"http://127.0.0.1:{stack['ports']['server']}/api/v1"
        token = httpx.post(api + "/auth/token", data={"username": "quentin.quality",
                                                      "password": "amtrace-demo-2026"}).json()["access_token"]
        dhr = httpx.get(f"{api}/history/devices/{code}/dhr", headers={"Authorization": f"Bearer {token}"},
                        timeout=60).json()
        [decision] = dhr["release_gate"]
        assert decision["allowed"] is True
        res = httpx.get(f"http://127.0.0.1:{stack['ports']['influxdb']}/query", params={
            "db": "amtrace", "epoch": "ns",
            "q": "SELECT first(layer) FROM lpbf_job WHERE machine='lpbf-01' AND layer > 0"}).json()
        first_layer_ns = res["results"][0]["series"][0]["values"][0][0]
        assert first_layer_ns > _ns(decision["decided_at"]), "the printer built before the gate allowed it"
        assert [c["verdict"] for c in dhr["cycles"]] == ["pass", "pass", "pass"]
        assert {c["process"] for c in dhr["cycles"]} == {"heat_treatment", "cleaning", "steam"}
        assert dhr["seal"] is not None and dhr["local_overrides"] == []
    finally:
        subprocess.run([PY, "deploy/local/stack.py", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)
