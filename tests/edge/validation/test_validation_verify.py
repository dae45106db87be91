"""verify_build_file and the verify command: verdicts, policy, difference report, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from meshfiles import write_ascii_stl, write_binary_stl, write_mesh_3mf

from edge.validation.approvals import ApprovedBuildFile
from edge.validation.hashing import sha256_file
from edge.validation.verify import verify_build_file

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def design(tmp_path, part) -> Path:
    return write_binary_stl(tmp_path / "design.stl", part.triangles)


def moved_vertex(part, index=100, distance=0.05):
    moved = part.copy()
    moved.vertices[index] += part.vertex_normals[index] * distance
    return moved


def test_byte_identical_file_is_identical(tmp_path, design):
    copy = tmp_path / "build.stl"
    copy.write_bytes(design.read_bytes())
    result = verify_build_file(copy, design_path=design, build_volume_mm=(250, 250, 300))
    assert result.verdict == "identical" and result.allowed_to_build and result.exit_code == 0
    assert result.sha256 == result.approved_sha256 == sha256_file(design)
    assert result.reasons == ["bytes are identical to the approved file"]
    assert len(result.checks) == 8 and all(c.passed for c in result.checks)


@pytest.mark.parametrize("container", ["ascii", "3mf", "reordered"])
def test_same_geometry_in_another_file_is_geometry_equal(tmp_path, part, design, container):
    if container == "ascii":
        build = write_ascii_stl(tmp_path / "build.stl", part.triangles)
    elif container == "3mf":
        build = write_mesh_3mf(tmp_path / "build.3mf", part)
    else:
        rng = np.random.default_rng(3)
        tris = part.triangles[rng.permutation(1280)]
        tris = np.stack([np.roll(t, -k, axis=0) for t, k in zip(tris, rng.integers(0, 3, 1280))])
        build = write_binary_stl(tmp_path / "build.stl", tris)
    result = verify_build_file(build, design_path=design)
    assert result.verdict == "geometry_equal" and result.exit_code == 1
    assert not result.allowed_to_build
    assert result.reasons[0].endswith("the product's policy does not allow building it")
    allowed = verify_build_file(build, design_path=design, allow_geometry_equal=True)
    assert allowed.allowed_to_build and allowed.reasons[0].endswith("the product's policy allows building it")


def test_policy_and_fingerprint_come_from_the_approval_record(tmp_path, part, design):
    reference = verify_build_file(design, approved_sha256=sha256_file(design))
    approval = ApprovedBuildFile(
        file_name="design.stl",
        sha256=sha256_file(design),
        geometry_fingerprint=reference.geometry_fingerprint,
        design_iteration="D-1",
        allow_geometry_equal=True,
    )
    build = write_ascii_stl(tmp_path / "build.stl", part.triangles)
    result = verify_build_file(build, approved=approval)
    assert result.verdict == "geometry_equal" and result.allowed_to_build


def test_vertex_moved_by_50_micrometres_is_located(tmp_path, part, design):
    moved = moved_vertex(part)
    build = write_binary_stl(tmp_path / "build.stl", moved.triangles)
    result = verify_build_file(build, design_path=design)
    assert result.verdict == "different" and result.exit_code == 2 and not result.allowed_to_build
    diff = result.diff
    assert diff.max_deviation_mm == pytest.approx(0.05, abs=0.002)
    assert np.linalg.norm(np.array(diff.location_mm) - moved.vertices[100]) < 0.01
    assert diff.received_to_approved.side == "outside"
    assert diff.triangle_delta == 0
    x, y, z = moved.vertices[100]
    assert diff.summary.startswith(
        f"received file deviates by up to 0.050 mm outside the approved surface (material added) near ({x:.1f}, {y:.1f}, {z:.1f}) mm"
    )
    assert result.reasons[-1] == diff.summary


def test_scaled_by_1_001_is_different(tmp_path, part, design):
    scaled = part.copy()
    scaled.apply_scale(1.001)
    result = verify_build_file(write_binary_stl(tmp_path / "build.stl", scaled.triangles), design_path=design)
    assert result.verdict == "different"
    assert result.diff.volume_delta_percent == pytest.approx(0.3003, abs=0.001)
    assert "volume +0.3 %" in result.diff.summary
    assert result.diff.bbox_max_delta_mm == pytest.approx(scaled.bounds[1] - part.bounds[1], abs=1e-4)


def test_hash_only_reference_cannot_say_geometry_equal(tmp_path, part, design):
    build = write_ascii_stl(tmp_path / "build.stl", part.triangles)
    result = verify_build_file(build, approved_sha256=sha256_file(design))
    assert result.verdict == "different" and result.diff is None
    assert result.reasons[1] == "no approved geometry to compare with (only a hash was given)"


def test_hostile_file_is_invalid_and_the_caller_keeps_running(tmp_path, design):
    bad = tmp_path / "build.stl"
    bad.write_bytes(b"\0" * 80 + (3_000_000_000).to_bytes(4, "little") + b"\0" * 100)
    result = verify_build_file(bad, design_path=design)
    assert result.verdict == "invalid" and result.exit_code == 3 and not result.allowed_to_build
    assert result.error_kind == "too_many_triangles"
    assert result.error == f"binary STL declares 3000000000 triangles, above the limit of 10000000 (the file's 184 bytes hold 2) ({bad})"


def test_failed_check_blocks_an_identical_file(tmp_path, design):
    result = verify_build_file(design, approved_sha256=sha256_file(design), build_volume_mm=(10, 10, 10))
    assert result.verdict == "identical" and not result.allowed_to_build and result.exit_code == 5
    assert result.reasons[-1].startswith("check build_volume failed: part is 20.000 × 20.000 × 20.000 mm and does not fit")


def test_non_mesh_file_is_checked_on_bytes_only(tmp_path):
    job = tmp_path / "plate.slm"
    job.write_bytes(os.urandom(1000))
    result = verify_build_file(job, approved_sha256=sha256_file(job))
    assert result.verdict == "identical" and result.format is None and result.checks == []
    assert result.reasons[1] == "not a mesh file (.slm): only byte identity was checked"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.validation", "verify", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_and_outputs(tmp_path, part, design):
    same = tmp_path / "same.stl"
    same.write_bytes(design.read_bytes())
    ascii_ = write_ascii_stl(tmp_path / "ascii.stl", part.triangles)
    moved = write_binary_stl(tmp_path / "moved.stl", moved_vertex(part).triangles)
    broken = tmp_path / "broken.stl"
    broken.write_bytes(design.read_bytes()[:500])

    run = cli(str(same), "--sha256", sha256_file(design))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("IDENTICAL: the build file is byte-identical to the approved file")
    assert "[pass] watertight" in run.stdout

    run = cli(str(ascii_), "--design", str(design))
    assert run.returncode == 1
    assert run.stdout.startswith("GEOMETRY EQUAL") and "build     NOT ALLOWED" in run.stdout
    assert cli(str(ascii_), "--design", str(design), "--allow-geometry-equal").stdout.count("build     ALLOWED") == 1

    run = cli(str(moved), "--design", str(design), "--json")
    assert run.returncode == 2
    out = json.loads(run.stdout)
    assert out["verdict"] == "different" and out["exit_code"] == 2 and out["allowed_to_build"] is False
    assert out["diff"]["max_deviation_mm"] == pytest.approx(0.05, abs=0.002)
    assert {c["name"] for c in out["checks"]} >= {"watertight", "winding", "build_volume"}

    run = cli(str(moved), "--design", str(design))
    assert "difference report:" in run.stdout and "received file deviates by up to 0.050 mm" in run.stdout

    run = cli(str(broken), "--design", str(design), "--json")
    assert run.returncode == 3
    assert json.loads(run.stdout)["error"].startswith("binary STL declares 1280 triangles but the file holds 8")
    assert cli(str(broken), "--design", str(design)).stdout.startswith("INVALID: the build file is refused")

    assert cli(str(same), "--build-volume", "10,10,10", "--sha256", sha256_file(design)).returncode == 5


def test_cli_usage_errors_exit_4(tmp_path, design):
    assert cli(str(design)).returncode == 4  # neither --design nor --sha256
    bad = cli(str(design), "--sha256", "xyz")
    assert bad.returncode == 4 and "--sha256 must be 64 hex digits" in bad.stderr
    assert cli(str(design), "--design", str(tmp_path / "missing.stl")).returncode == 4
    assert cli(str(design), "--sha256", "0" * 64, "--build-volume", "1,2").returncode == 4


def test_cli_progress_goes_to_stderr(tmp_path, design):
    run = cli(str(design), "--sha256", sha256_file(design), "--progress")
    assert run.returncode == 0
    assert "verify: sha256 100 %" in run.stderr and "verify:" not in run.stdout


def test_register_adds_verify_to_another_parser(design):
    import argparse

    from edge.validation.cli import register

    parser = argparse.ArgumentParser(prog="amtrace-edge")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", str(design), "--sha256", sha256_file(design)])
    assert args.func(args) == 0


def test_design_approval_helpers(tmp_path, part, design):
    from edge.validation.errors import InvalidBuildFile
    from edge.validation.verify import geometry_fingerprint_file, read_mesh_file

    threemf = write_mesh_3mf(tmp_path / "d.3mf", part)
    assert geometry_fingerprint_file(threemf) == geometry_fingerprint_file(design)
    assert read_mesh_file(design).triangle_count == 1280
    job = tmp_path / "job.cli"
    job.write_text("not a mesh")
    assert geometry_fingerprint_file(job) is None
    with pytest.raises(InvalidBuildFile, match="truncated binary STL"):
        (tmp_path / "bad.stl").write_bytes(b"\0" * 10)
        geometry_fingerprint_file(tmp_path / "bad.stl")
