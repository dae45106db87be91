"""Mesh integrity checks on the quantised triangles, each with its measured value and a reason.

Vertices are merged exactly on their integer-micrometre coordinates (the fingerprint's
quantisation), so "shared vertex" means "same position to 1 µm", the same identity the fingerprint
uses. Everything is vectorised numpy/scipy on edge codes; trimesh is not needed here, and the
tests compare the results with trimesh's own is_watertight / is_winding_consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .fingerprint import CanonicalTriangles
from .limits import ValidationLimits
from .meshfile import BLOCK, MeshFile


class Check(BaseModel):
    """One check of a build file: what was measured, whether it passed, and why."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stable check name, e.g. 'watertight'")
    passed: bool = Field(description="True when the build file meets this check")
    value: Any = Field(description="The measured value (number, text or list)")
    reason: str = Field(description="A sentence saying what was found")


class MeshStats(BaseModel):
    """Sizes of one mesh in millimetres, used by the checks and the difference report."""

    model_config = ConfigDict(extra="forbid")

    triangles: int
    vertices: int = Field(description="Distinct vertices after merging at 1 µm")
    bodies: int = Field(description="Connected pieces (sharing vertices)")
    volume_mm3: float = Field(description="Signed enclosed volume; negative when wound inside out")
    area_mm2: float
    bbox_min_mm: list[float]
    bbox_max_mm: list[float]
    extents_mm: list[float]


@dataclass
class MergedMesh:
    """Indexed form of a mesh: distinct µm vertices and faces into them."""

    vertices_um: np.ndarray  # (v, 3) int32
    faces: np.ndarray  # (n, 3) int64

    @property
    def vertices_mm(self) -> np.ndarray:
        """Vertex positions in mm (float64)."""
        return self.vertices_um.astype(np.float64) / 1000.0


def merge_vertices(canon: CanonicalTriangles) -> MergedMesh:
    """Merge vertices that quantise to the same micrometre; keeps each triangle's winding."""
    unique, inverse = np.unique(canon.keys.ravel(), return_inverse=True)
    return MergedMesh(vertices_um=canon.decode(unique).reshape(-1, 3), faces=inverse.reshape(-1, 3).astype(np.int64))


def mesh_stats(mesh: MeshFile, merged: MergedMesh) -> tuple[MeshStats, int]:
    """Volume, area, bounding box and body count (plus the body count) of a mesh."""
    tris = mesh.triangles
    n = tris.shape[0]
    volume = 0.0
    area = 0.0
    for start in range(0, n, BLOCK):
        block = tris[start : start + BLOCK].astype(np.float64)
        v0, v1, v2 = block[:, 0], block[:, 1], block[:, 2]
        volume += float(np.einsum("ij,ij->", v0, np.cross(v1, v2))) / 6.0
        area += float(np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1).sum()) / 2.0
    flat = tris.reshape(n, 9)
    lo = [float(flat[:, axis::3].min()) for axis in range(3)]
    hi = [float(flat[:, axis::3].max()) for axis in range(3)]
    bodies = count_bodies(merged)
    stats = MeshStats(
        triangles=n,
        vertices=len(merged.vertices_um),
        bodies=bodies,
        volume_mm3=volume,
        area_mm2=area,
        bbox_min_mm=lo,
        bbox_max_mm=hi,
        extents_mm=[h - l for l, h in zip(lo, hi)],
    )
    return stats, bodies


def count_bodies(merged: MergedMesh) -> int:
    """Number of connected pieces, counting triangles that share a vertex as connected."""
    f = merged.faces
    v = len(merged.vertices_um)
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(v, v))
    return int(connected_components(graph, directed=False)[0])


def integrity_checks(
    mesh: MeshFile,
    merged: MergedMesh,
    stats: MeshStats,
    *,
    build_volume_mm: tuple[float, float, float] | None = None,
    expected_bodies: int | None = None,
    limits: ValidationLimits | None = None,
) -> list[Check]:
    """Run every integrity check; each returns its measured value and a reason."""
    limits = limits or ValidationLimits()
    f = merged.faces
    v = len(merged.vertices_um)
    checks: list[Check] = []

    # Edges as integer codes a*v+b: directed for winding, undirected for watertightness.
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    undirected = np.minimum(a, b) * v + np.maximum(a, b)
    _, edge_uses = np.unique(undirected, return_counts=True)
    boundary = int((edge_uses == 1).sum())
    non_manifold = int((edge_uses > 2).sum())
    watertight = boundary == 0 and non_manifold == 0
    checks.append(
        Check(
            name="watertight",
            passed=watertight,
            value={"boundary_edges": boundary, "non_manifold_edges": non_manifold},
            reason="every edge is shared by exactly two triangles"
            if watertight
            else f"{boundary} open (boundary) edges and {non_manifold} edges shared by more than two triangles",
        )
    )
    _, directed_uses = np.unique(a * v + b, return_counts=True)
    same_direction = int((directed_uses > 1).sum())
    checks.append(
        Check(
            name="winding",
            passed=same_direction == 0,
            value={"edges_used_twice_in_one_direction": same_direction},
            reason="neighbouring triangles are wound consistently"
            if same_direction == 0
            else f"{same_direction} edges are used twice in the same direction: neighbouring triangles have opposite winding",
        )
    )

    degenerate = _degenerate_count(merged)
    checks.append(
        Check(
            name="degenerate_faces",
            passed=degenerate == 0,
            value=degenerate,
            reason="no triangle has zero area at 1 µm"
            if degenerate == 0
            else f"{degenerate} triangles have zero area (repeated or collinear vertices at 1 µm)",
        )
    )

    duplicates = _duplicate_count(f, v)
    checks.append(
        Check(
            name="duplicate_faces",
            passed=duplicates == 0,
            value=duplicates,
            reason="no triangle appears twice"
            if duplicates == 0
            else f"{duplicates} triangles repeat another triangle's three vertices",
        )
    )

    volume = stats.volume_mm3
    if volume > 0:
        reason = f"encloses {volume:.3f} mm³ with outward normals"
    elif volume < 0:
        reason = f"signed volume {volume:.3f} mm³ is negative: the triangles are wound inside out"
    else:
        reason = "the mesh encloses no volume"
    if not watertight:
        reason += " (not closed, so the volume is only indicative)"
    checks.append(Check(name="volume", passed=volume > 0, value=round(volume, 6), reason=reason))

    bodies = stats.bodies
    if expected_bodies is None:
        checks.append(Check(name="bodies", passed=True, value=bodies, reason=_bodies(bodies)))
    else:
        checks.append(
            Check(
                name="bodies",
                passed=bodies == expected_bodies,
                value=bodies,
                reason=f"{_bodies(bodies)}, as in the approved design"
                if bodies == expected_bodies
                else f"{_bodies(bodies)}, but the approved design has {expected_bodies}",
            )
        )

    extents = stats.extents_mm
    size = " × ".join(f"{e:.3f}" for e in extents)
    if build_volume_mm is None:
        checks.append(
            Check(name="build_volume", passed=True, value=extents, reason=f"part is {size} mm; no build volume configured")
        )
    else:
        fits = all(e <= limit for e, limit in zip(extents, build_volume_mm))
        volume_text = " × ".join(f"{x:g}" for x in build_volume_mm)
        checks.append(
            Check(
                name="build_volume",
                passed=fits,
                value=extents,
                reason=f"part is {size} mm and fits the {volume_text} mm build volume"
                if fits
                else f"part is {size} mm and does not fit the {volume_text} mm build volume",
            )
        )

    largest = max(extents)
    unit = mesh.unit if mesh.unit_declared else "millimeter (assumed)"
    source = f"declared unit {mesh.unit}, converted to mm" if mesh.unit_declared else "STL carries no unit; read as mm"
    plausible = largest >= limits.min_plausible_extent_mm
    checks.append(
        Check(
            name="units",
            passed=plausible,
            value=unit,
            reason=f"{source}; largest extent {largest:.3f} mm"
            if plausible
            else f"largest extent is {largest:.6f} mm, below {limits.min_plausible_extent_mm:g} mm: the file is "
            "probably in metres or another unit while read as mm",
        )
    )
    return checks


def _degenerate_count(merged: MergedMesh) -> int:
    """Triangles whose integer cross product is zero: exact, no epsilon."""
    f = merged.faces
    q = merged.vertices_um.astype(np.int64)
    count = 0
    for start in range(0, len(f), BLOCK):
        block = f[start : start + BLOCK]
        e1 = q[block[:, 1]] - q[block[:, 0]]
        e2 = q[block[:, 2]] - q[block[:, 0]]
        count += int((np.cross(e1, e2) == 0).all(axis=1).sum())  # |coords| < 2^27 µm: no overflow
    return count


def _duplicate_count(faces: np.ndarray, v: int) -> int:
    """Triangles beyond the first with the same three vertices, in either winding."""
    ordered = np.sort(faces, axis=1)
    if v < (1 << 21):
        codes = (ordered[:, 0] << 42) | (ordered[:, 1] << 21) | ordered[:, 2]
        return len(codes) - len(np.unique(codes))
    return len(ordered) - len(np.unique(ordered, axis=0))


def _bodies(count: int) -> str:
    return "one body" if count == 1 else f"{count} separate bodies"
