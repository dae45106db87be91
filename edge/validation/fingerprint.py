"""Canonical geometric fingerprint: the same triangles give the same hash whatever the file.

Canonical form (version 1, written "gf1:" + 64 hex digits):

1. Every coordinate is taken in millimetres as IEEE float32, the precision binary STL stores
   (ASCII STL and 3MF decimals are read as float64 and rounded to the nearest float32; 3MF
   coordinates after build transforms and unit conversion).
2. It is quantised to an integer number of micrometres: q = round_half_even(float64(x) * 1000).
   The product of a float32 and 1000 is exact in float64 (24 + 10 bits < 53), so q depends only on
   the float32 value and is the same on every machine.
3. Each triangle (a, b, c) of quantised vertices is rotated cyclically so that it starts at its
   lexicographically smallest rotation: (a, b, c), (b, c, a) or (c, a, b), comparing the 9
   integers of each rotation. The winding is kept (the vertices are not sorted), so a flipped
   triangle is a different geometry.
4. The triangles are sorted lexicographically on their 9 integers.
5. The fingerprint is SHA-256 over b"amtrace-geometry-v1\\n", the triangle count as uint64
   little-endian, then the 9 int32 little-endian integers of each triangle in sorted order.

So the fingerprint is independent of container (binary STL, ASCII STL, 3MF), triangle order,
starting vertex, normals and attribute bytes, and depends on every triangle's position (to 1 µm),
its winding and its multiplicity (duplicate triangles count).

Tolerance and its edge cases: the quantum is 1 µm, far below any AM process resolution
(tens of µm). It is not a tolerance band: two coordinates 0.01 µm apart that straddle a
rounding boundary (x.xxx5 mm) quantise to different micrometres, so a file re-exported
with fewer decimals than float32 holds (e.g. 6 significant digits, ~0.05 µm at 100 mm) can get a
different fingerprint although nothing meaningful changed. verify() then reports "different" with
a difference report whose maximum deviation is below 0.001 mm, which tells the reader exactly
that. Files written at full float32 precision (any binary STL, ASCII/3MF written with 9 or more
significant digits) round-trip exactly.

Implementation: vertices are packed into one uint64 key each (21 bits per axis after subtracting
the minimum, order-preserving) when every axis spans less than 2^21 µm (2.097 m); otherwise the
key is the vertex's rank among the distinct vertices. Either key orders vertices
lexicographically, so both paths give the same canonical bytes (tested). Work is done in blocks
of 65536 triangles so that no float64 copy of the whole mesh exists: peak memory for binary STL
is the file plus about 80 bytes per triangle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .meshfile import BLOCK

VERSION = "gf1"
QUANTUM_MM = 0.001
DOMAIN = b"amtrace-geometry-v1\n"
_BITS = 21
_SPAN = (1 << _BITS) - 1
_SHIFT_X = np.uint64(2 * _BITS)
_SHIFT_Y = np.uint64(_BITS)
_MASK = np.uint64(_SPAN)


@dataclass
class CanonicalTriangles:
    """Triangles as per-vertex uint64 keys, each triangle rotated to its canonical start."""

    keys: np.ndarray  # (n, 3) uint64, lexicographic order of keys == order of (x, y, z) in µm
    origin: np.ndarray  # (3,) int64 minimum µm per axis (packed keys) — unused for ranked keys
    table: np.ndarray | None  # (v, 3) int32 distinct µm vertices, when keys are ranks

    def decode(self, keys: np.ndarray) -> np.ndarray:
        """Vertex keys (any shape) to integer micrometre coordinates (shape + (3,)) int32."""
        if self.table is not None:
            return self.table[keys.astype(np.int64)]
        out = np.empty(keys.shape + (3,), np.int64)
        out[..., 0] = (keys >> _SHIFT_X).astype(np.int64)
        out[..., 1] = ((keys >> _SHIFT_Y) & _MASK).astype(np.int64)
        out[..., 2] = (keys & _MASK).astype(np.int64)
        out += self.origin
        return out.astype(np.int32)


def quantise(values: np.ndarray) -> np.ndarray:
    """Millimetres (any float array) to integer micrometres as int64, by the canonical rule."""
    exact = np.asarray(values, dtype=np.float32).astype(np.float64)
    exact *= 1000.0
    return np.rint(exact).astype(np.int64)


def canonical_triangles(triangles: np.ndarray, *, force_ranked: bool = False) -> CanonicalTriangles:
    """Quantise and rotate (n, 3, 3) triangles into canonical vertex keys (see module docstring)."""
    n = triangles.shape[0]
    flat = triangles.reshape(n, 9)
    lo = quantise(np.stack([flat[:, axis::3].min() for axis in range(3)]))
    hi = quantise(np.stack([flat[:, axis::3].max() for axis in range(3)]))
    if not force_ranked and int((hi - lo).max()) <= _SPAN:
        keys = np.empty((n, 3), np.uint64)
        for start in range(0, n, BLOCK):
            q = quantise(flat[start : start + BLOCK]).reshape(-1, 3, 3)
            q -= lo
            packed = (q[..., 0].astype(np.uint64) << _SHIFT_X) | (q[..., 1].astype(np.uint64) << _SHIFT_Y)
            packed |= q[..., 2].astype(np.uint64)
            keys[start : start + BLOCK] = packed
        table = None
    else:
        q = quantise(flat).reshape(-1, 3)
        table, inverse = np.unique(q, axis=0, return_inverse=True)  # rows sorted lexicographically
        keys = inverse.reshape(n, 3).astype(np.uint64)
        table = table.astype(np.int32)
    for start in range(0, n, BLOCK):
        keys[start : start + BLOCK] = _smallest_rotation(keys[start : start + BLOCK])
    return CanonicalTriangles(keys=keys, origin=lo, table=table)


def _smallest_rotation(k: np.ndarray) -> np.ndarray:
    a, b, c = k[:, 0], k[:, 1], k[:, 2]
    rotations = [(a, b, c), (b, c, a), (c, a, b)]
    best = list(rotations[0])
    for candidate in rotations[1:]:
        # lexicographic "candidate < best" on three keys; ties (degenerate triangles) fall through
        less = (candidate[0] < best[0]) | (
            (candidate[0] == best[0]) & ((candidate[1] < best[1]) | ((candidate[1] == best[1]) & (candidate[2] < best[2])))
        )
        best = [np.where(less, candidate[j], best[j]) for j in range(3)]
    return np.stack(best, axis=1)


def canonical_order(canon: CanonicalTriangles) -> np.ndarray:
    """Indices that sort the canonical triangles lexicographically."""
    k = canon.keys
    return np.lexsort((k[:, 2], k[:, 1], k[:, 0]))


def fingerprint_canonical(canon: CanonicalTriangles, order: np.ndarray | None = None) -> str:
    """SHA-256 of the canonical byte form, as "gf1:<hex>"."""
    if order is None:
        order = canonical_order(canon)
    n = len(order)
    digest = hashlib.sha256(DOMAIN)
    digest.update(np.uint64(n).astype("<u8").tobytes())
    for start in range(0, n, BLOCK):
        rows = canon.decode(canon.keys[order[start : start + BLOCK]])  # (b, 3, 3) int32
        digest.update(np.ascontiguousarray(rows, dtype="<i4").tobytes())
    return f"{VERSION}:{digest.hexdigest()}"


def geometry_fingerprint(triangles: np.ndarray) -> str:
    """Canonical fingerprint of (n, 3, 3) triangles in mm (coordinates already checked finite)."""
    return fingerprint_canonical(canonical_triangles(triangles))
