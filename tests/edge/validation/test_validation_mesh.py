"""Integrity checks: each measured value and reason, compared with trimesh where it has the same check."""

from __future__ import annotations

import numpy as np
import trimesh

from edge.validation.fingerprint import canonical_triangles
from edge.validation.mesh import integrity_checks, merge_vertices, mesh_stats
from edge.validation.meshfile import MeshFile


def run(triangles, unit="millimeter", declared=False, **kw):
    mesh = MeshFile(np.asarray(triangles, np.float32), "stl-binary", unit, declared, 1)
    merged = merge_vertices(canonical_triangles(mesh.triangles))
    stats, _ = mesh_stats(mesh, merged)
    return {c.name: c for c in integrity_checks(mesh, merged, stats, **kw)}, stats


def test_closed_part_passes_every_check(part):
    checks, stats = run(part.triangles, build_volume_mm=(250, 250, 300))
    assert all(c.passed for c in checks.values()), checks
    assert list(checks) == ["watertight", "winding", "degenerate_faces", "duplicate_faces", "volume", "bodies", "build_volume", "units"]
    assert stats.triangles == 1280 and stats.vertices == 642 and stats.bodies == 1
    assert abs(stats.volume_mm3 - part.volume) < 1e-3 and abs(stats.area_mm2 - part.area) < 1e-3
    assert checks["watertight"].value == {"boundary_edges": 0, "non_manifold_edges": 0}
    assert checks["units"].reason == "STL carries no unit; read as mm; largest extent 20.000 mm"


def test_open_mesh_is_not_watertight(part):
    checks, _ = run(part.triangles[1:])
    assert not trimesh.Trimesh(**trimesh.triangles.to_kwargs(part.triangles[1:])).is_watertight
    assert checks["watertight"].value == {"boundary_edges": 3, "non_manifold_edges": 0}
    assert checks["watertight"].reason == "3 open (boundary) edges and 0 edges shared by more than two triangles"
    assert checks["volume"].reason.endswith("(not closed, so the volume is only indicative)")


def test_flipped_triangle_breaks_winding(part):
    tris = part.triangles.copy()
    tris[10] = tris[10][[0, 2, 1]]
    checks, _ = run(tris)
    assert checks["winding"].value == {"edges_used_twice_in_one_direction": 3}
    assert not checks["winding"].passed and checks["watertight"].passed


def test_inside_out_mesh_has_negative_volume(part):
    checks, _ = run(part.triangles[:, [0, 2, 1]])
    assert not checks["volume"].passed
    assert checks["volume"].reason.startswith("signed volume -4152.7")
    assert checks["volume"].reason.endswith("is negative: the triangles are wound inside out")


def test_degenerate_and_duplicate_faces_are_counted(part):
    a, b = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]
    sliver = [[a, b, [2.0, 0.0, 0.0]], [a, a, b]]
    tris = np.concatenate([part.triangles, part.triangles[:2], part.triangles[2:3, [0, 2, 1]], sliver])
    checks, _ = run(tris)
    assert checks["degenerate_faces"].value == 2
    assert checks["duplicate_faces"].value == 3
    assert checks["duplicate_faces"].reason == "3 triangles repeat another triangle's three vertices"


def test_bodies_and_build_volume(part):
    two = np.concatenate([part.triangles, part.triangles + [300.0, 0.0, 0.0]])
    checks, stats = run(two, build_volume_mm=(250, 250, 300), expected_bodies=1)
    assert stats.bodies == 2
    assert checks["bodies"].reason == "2 separate bodies, but the approved design has 1"
    assert checks["build_volume"].value == [320.0, 20.0, 20.0]
    assert checks["build_volume"].reason == "part is 320.000 × 20.000 × 20.000 mm and does not fit the 250 × 250 × 300 mm build volume"


def test_part_in_metres_read_as_mm_fails_units(part):
    checks, _ = run(part.triangles / 1000.0)
    assert not checks["units"].passed
    assert checks["units"].reason.startswith("largest extent is 0.020000 mm, below 1 mm")
    checks, _ = run(part.triangles, unit="inch", declared=True)
    assert checks["units"].value == "inch" and checks["units"].passed
