"""Difference report between the approved and the received geometry, in words an engineer reads.

Method (and its accuracy): both meshes are merged at 1 µm. Deviation is measured both ways:
received → approved and approved → received. Query points are (a) every vertex of one mesh that
does not exist, to the micrometre, in the other (vertices present in both are at distance 0), and
(b) `samples` points spread over the surface by area (seeded, so the report is repeatable). For
each point the exact distance to the nearest triangle of the other mesh is computed
(trimesh.proximity.closest_point: an R-tree narrows the candidates, then exact point-triangle
distance). The distance is therefore exact at every point queried; the maximum is exact when it
lies at a vertex (always the case when both meshes share their tessellation and a vertex moved)
and otherwise a lower bound whose error is at most the deviation's change over the gap between
samples. Above `max_points` query points, a seeded random subset is used and the report says so.
The sign comes from the nearest triangle's normal: "outside" means the received surface lies
outside the approved one (material added), "inside" means material removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .mesh import MergedMesh, MeshStats

if TYPE_CHECKING:  # imported lazily where used: trimesh is slow to import and only the diff needs it
    import trimesh


class Deviation(BaseModel):
    """Distance from the points of one mesh to the surface of the other."""

    model_config = ConfigDict(extra="forbid")

    max_mm: float
    mean_mm: float = Field(description="Mean over all vertices and samples, unchanged vertices counting as 0")
    location_mm: list[float] | None = Field(description="Where the largest deviation lies (a point of the measured mesh)")
    side: str = Field(description="'outside' (material added), 'inside' (material removed) or 'on'")
    points_queried: int
    points_total: int
    subsampled: bool = Field(default=False, description="True when more than max_points candidates were thinned out")


class DiffReport(BaseModel):
    """What differs between approved and received geometry, with the location of the largest deviation."""

    model_config = ConfigDict(extra="forbid")

    approved: MeshStats
    received: MeshStats
    triangle_delta: int
    volume_delta_mm3: float
    volume_delta_percent: float | None
    area_delta_percent: float | None
    bbox_min_delta_mm: list[float]
    bbox_max_delta_mm: list[float]
    received_to_approved: Deviation
    approved_to_received: Deviation
    max_deviation_mm: float = Field(description="Larger of the two directions: an estimate of the Hausdorff distance")
    location_mm: list[float] | None = Field(description="Location of the largest deviation, in build coordinates")
    method: str
    summary: str


def difference_report(
    approved: MergedMesh,
    approved_stats: MeshStats,
    received: MergedMesh,
    received_stats: MeshStats,
    *,
    samples: int = 20_000,
    max_points: int = 200_000,
    seed: int = 0,
) -> DiffReport:
    """Compare two merged meshes: counts, volume, area, boxes and two-way surface deviation."""
    import trimesh  # imported here: only a differing file pays its import time (~0.5 s)

    approved_tm = trimesh.Trimesh(approved.vertices_mm, approved.faces, process=False, validate=False)
    received_tm = trimesh.Trimesh(received.vertices_mm, received.faces, process=False, validate=False)
    rng = np.random.default_rng(seed)
    shared_r, shared_a = _shared_vertices(received.vertices_um, approved.vertices_um)
    forward = _deviation(received_tm, ~shared_r, approved_tm, samples, max_points, rng)
    backward = _deviation(approved_tm, ~shared_a, received_tm, samples, max_points, rng)
    worst = forward if forward.max_mm >= backward.max_mm else backward

    def pct(new: float, old: float) -> float | None:
        return None if old == 0 else 100.0 * (new - old) / abs(old)

    volume_pct = pct(received_stats.volume_mm3, approved_stats.volume_mm3)
    area_pct = pct(received_stats.area_mm2, approved_stats.area_mm2)
    report = DiffReport(
        approved=approved_stats,
        received=received_stats,
        triangle_delta=received_stats.triangles - approved_stats.triangles,
        volume_delta_mm3=received_stats.volume_mm3 - approved_stats.volume_mm3,
        volume_delta_percent=volume_pct,
        area_delta_percent=area_pct,
        bbox_min_delta_mm=[r - a for r, a in zip(received_stats.bbox_min_mm, approved_stats.bbox_min_mm)],
        bbox_max_delta_mm=[r - a for r, a in zip(received_stats.bbox_max_mm, approved_stats.bbox_max_mm)],
        received_to_approved=forward,
        approved_to_received=backward,
        max_deviation_mm=worst.max_mm,
        location_mm=worst.location_mm,
        method=(
            "exact point-to-triangle distance at every vertex not shared to 1 µm and at "
            f"{samples} area-weighted surface samples per direction (seed {seed}); "
            "exact at vertices, a lower bound between samples"
            + (f"; query points thinned to {max_points} per direction" if forward.subsampled or backward.subsampled else "")
        ),
        summary="",
    )
    report.summary = _summary(report, forward, backward)
    return report


def _shared_vertices(received_um: np.ndarray, approved_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the vertices of each mesh that exist, to the micrometre, in the other."""
    both = np.concatenate([received_um, approved_um]).astype(np.int64)
    _, ids = np.unique(both, axis=0, return_inverse=True)
    ids = ids.ravel()
    r_ids, a_ids = ids[: len(received_um)], ids[len(received_um) :]
    return np.isin(r_ids, a_ids), np.isin(a_ids, r_ids)


def _deviation(source: "trimesh.Trimesh", changed: np.ndarray, target: "trimesh.Trimesh", samples: int, max_points: int, rng: np.random.Generator) -> Deviation:
    import trimesh

    points = [source.vertices[changed]]
    if samples:
        sampled, _ = trimesh.sample.sample_surface(source, samples, seed=int(rng.integers(1 << 31)))
        points.append(sampled)
    query = np.concatenate(points)
    total = len(source.vertices) + samples
    subsampled = len(query) > max_points
    if subsampled:
        query = query[rng.choice(len(query), max_points, replace=False)]
    if len(query) == 0:
        return Deviation(max_mm=0.0, mean_mm=0.0, location_mm=None, side="on", points_queried=0, points_total=total)
    closest, distance, triangle = trimesh.proximity.closest_point(target, query)
    worst = int(np.argmax(distance))
    offset = query[worst] - closest[worst]
    along = float(np.dot(offset, target.face_normals[triangle[worst]]))
    side = "on" if distance[worst] == 0 else ("outside" if along > 0 else "inside")
    return Deviation(
        max_mm=float(distance[worst]),
        mean_mm=float(distance.sum() / total),
        location_mm=[round(float(c), 4) for c in query[worst]],
        side=side,
        points_queried=len(query),
        points_total=total,
        subsampled=subsampled,
    )


def _summary(report: DiffReport, forward: Deviation, backward: Deviation) -> str:
    worst = forward if forward.max_mm >= backward.max_mm else backward
    parts = []
    if worst.max_mm > 0 and worst.location_mm is not None:
        x, y, z = worst.location_mm
        if worst is forward:
            where = {"outside": "outside the approved surface (material added)", "inside": "inside the approved surface (material removed)"}.get(worst.side, "")
        else:
            where = {"outside": "where the received surface lies inside it (material removed)", "inside": "where the received surface lies outside it (material added)"}.get(worst.side, "")
            where = f"from the approved surface {where}".strip()
        parts.append(f"received file deviates by up to {worst.max_mm:.3f} mm {where} near ({x:.1f}, {y:.1f}, {z:.1f}) mm".replace("  ", " "))
    else:
        parts.append("no surface deviation found at the points queried")
    if report.volume_delta_percent is not None:
        parts.append(f"volume {_percent(report.volume_delta_percent)}")
    if report.area_delta_percent is not None:
        parts.append(f"surface area {_percent(report.area_delta_percent)}")
    parts.append(f"triangles {report.approved.triangles} → {report.received.triangles}")
    return "; ".join(parts)


def _percent(value: float) -> str:
    return f"{value:+.1f} %" if abs(value) >= 0.1 else f"{value:+.3f} %"
