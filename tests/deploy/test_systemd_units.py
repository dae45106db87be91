"""deploy/systemd/: every unit passes `systemd-analyze verify` (systemd's own parser, not ours), with the install
path pointed at this checkout's virtual environment; the hardening a plant expects is in each service; the
server runs as N templated instances behind one migration."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "CapabilityBoundingSet": "", "User": "amtrace"}


def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(path.read_text())
    return cp


def test_systemd_accepts_every_unit(tmp_path):
    names = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))
    assert {"amtrace-edge.service", "amtrace-server@.service", "amtrace-migrate.service", "amtrace-audit.service",
            "amtrace-audit.timer", "amtrace-dhr-summaries.service", "amtrace-dhr-summaries.timer",
            "amtrace-backup.service", "amtrace-backup.timer"} <= set(names)
    for name in names:
        text = (UNITS / name).read_text().replace("/opt/amtrace/.venv/bin", str(ROOT / ".venv" / "bin"))
        (tmp_path / name).write_text(text)
    # An instance of the template, as `systemctl enable amtrace-server@8400` makes it.
    (tmp_path / "amtrace-server@8400.service").write_text((tmp_path / "amtrace-server@.service").read_text())
    checked = [str(tmp_path / n) for n in names if n != "amtrace-server@.service"]
    r = subprocess.run(["systemd-analyze", "verify", *checked, str(tmp_path / "amtrace-server@8400.service")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("[Service]", "[Service]\nRestart=sometimes"))
    r = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "restart specifier" in r.stderr, "systemd-analyze must be able to find fault with a unit"


def test_every_service_is_hardened_and_server_instances_share_one_migration():
    for path in UNITS.glob("*.service"):
        service = dict(_unit(path)["Service"])
        missing = {k: v for k, v in HARDENING.items() if service.get(k) != v}
        assert not missing, f"{path.name}: {missing}"
        assert service.get("StateDirectory"), f"{path.name}: state under /var/lib"
    server = _unit(UNITS / "amtrace-server@.service")
    assert "--port %i" in server["Service"]["ExecStart"] and "migrate" not in server["Service"]["ExecStart"]
    assert "amtrace-migrate.service" in server["Unit"]["Requires"]
    assert _unit(UNITS / "amtrace-audit.timer")["Timer"]["OnCalendar"]
