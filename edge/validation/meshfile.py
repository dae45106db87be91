"""The triangles read from a build file, whatever its container, and the checks every reader shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidBuildFile
from .limits import ValidationLimits

# Rows per block when a whole-mesh pass would otherwise make float64 temporaries of the full mesh.
BLOCK = 1 << 16


@dataclass
class MeshFile:
    """Triangles of a build file in millimetres, (n, 3, 3) float32, plus what the container said about them."""

    triangles: np.ndarray
    format: str  # "stl-binary", "stl-ascii" or "3mf"
    unit: str  # the declared unit (3MF) or "millimeter" (STL carries none)
    unit_declared: bool
    parts: int  # STL solids, or 3MF build items
    notes: list[str] = field(default_factory=list)

    @property
    def triangle_count(self) -> int:
        """Number of triangles."""
        return int(self.triangles.shape[0])


def check_coordinates(triangles: np.ndarray, limits: ValidationLimits, where: str) -> None:
    """Refuse empty meshes, NaN/infinite coordinates and coordinates beyond the limit, naming the triangle."""
    n = triangles.shape[0]
    if n == 0:
        raise InvalidBuildFile("the file holds no triangles (empty mesh)", where, kind="empty")
    flat = triangles.reshape(n, 9)
    bound = limits.max_abs_coordinate_mm
    for start in range(0, n, BLOCK):
        block = flat[start : start + BLOCK]
        finite = np.isfinite(block)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise InvalidBuildFile(
                f"triangle {start + row + 1} has a non-finite coordinate ({float(block[row, col])}); "
                "NaN or infinite coordinates are refused",
                where,
                kind="non_finite",
            )
        big = np.abs(block) > bound
        if big.any():
            row, col = np.argwhere(big)[0]
            raise InvalidBuildFile(
                f"triangle {start + row + 1} has coordinate {float(block[row, col]):g} mm, beyond the limit of "
                f"±{bound:g} mm",
                where,
                kind="coordinate_range",
            )
