"""Geometric fingerprint: equal for the same triangles in any container and order, different otherwise."""

from __future__ import annotations

import numpy as np
import trimesh
from meshfiles import write_ascii_stl, write_binary_stl, write_mesh_3mf

from edge.validation.fingerprint import canonical_triangles, fingerprint_canonical, geometry_fingerprint, quantise
from edge.validation.stl import read_stl_bytes
from edge.validation.threemf import read_3mf_bytes


def fp(triangles) -> str:
    return geometry_fingerprint(np.asarray(triangles, dtype=np.float32))


def test_same_geometry_in_every_container_gives_one_fingerprint(tmp_path, part):
    binary = write_binary_stl(tmp_path / "b.stl", part.triangles).read_bytes()
    ascii_ = write_ascii_stl(tmp_path / "a.stl", part.triangles).read_bytes()
    threemf = write_mesh_3mf(tmp_path / "p.3mf", part).read_bytes()
    trimesh_binary = trimesh.exchange.stl.export_stl(part)
    trimesh_ascii = trimesh.exchange.stl.export_stl_ascii(part).encode()
    assert len({binary, ascii_, threemf, trimesh_binary, trimesh_ascii}) == 5  # the bytes all differ
    prints = {
        geometry_fingerprint(read_stl_bytes(binary).triangles),
        geometry_fingerprint(read_stl_bytes(ascii_).triangles),
        geometry_fingerprint(read_3mf_bytes(threemf).triangles),
        geometry_fingerprint(read_stl_bytes(trimesh_binary).triangles),
        geometry_fingerprint(read_stl_bytes(trimesh_ascii).triangles),
    }
    assert len(prints) == 1
    assert next(iter(prints)).startswith("gf1:") and len(next(iter(prints))) == 68


def test_binary_stl_round_trip_through_ascii_keeps_the_fingerprint(tmp_path, part):
    # Binary (float32) written out as ASCII with 9 significant digits reads back to the same float32.
    binary = read_stl_bytes(write_binary_stl(tmp_path / "b.stl", part.triangles).read_bytes())
    ascii_ = read_stl_bytes(write_ascii_stl(tmp_path / "a.stl", binary.triangles, number="{:.9g}").read_bytes())
    assert geometry_fingerprint(ascii_.triangles) == geometry_fingerprint(binary.triangles)


def test_triangle_order_and_starting_vertex_do_not_matter(part):
    rng = np.random.default_rng(7)
    tris = part.triangles[rng.permutation(len(part.triangles))]
    shift = rng.integers(0, 3, len(tris))
    rotated = np.stack([np.roll(t, -k, axis=0) for t, k in zip(tris, shift)])
    assert fp(rotated) == fp(part.triangles)


def test_winding_duplicates_and_moves_do_matter(part):
    base = fp(part.triangles)
    flipped = part.triangles.copy()
    flipped[0] = flipped[0][[0, 2, 1]]
    assert fp(flipped) != base
    assert fp(np.concatenate([part.triangles, part.triangles[:1]])) != base
    moved = part.triangles.copy()
    moved[5, 1, 0] += 0.001
    assert fp(moved) != base
    assert fp(part.triangles * 1.001) != base


def test_sub_micrometre_noise_within_a_quantum_is_ignored():
    tri = np.array([[[1.0001, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.5]]])
    assert fp(tri) == fp(tri + 0.0002)  # 1.0001 -> 1.0003 mm: both quantise to 1000 µm
    assert quantise(np.array([1.0004, 1.0006, -0.0004])).tolist() == [1000, 1001, 0]


def test_degenerate_triangles_have_a_canonical_start():
    a, b = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]
    assert fp([[a, a, b]]) == fp([[a, b, a]]) == fp([[b, a, a]])


def test_ranked_keys_give_the_same_bytes_as_packed_keys(part):
    tris = part.triangles.astype(np.float32)
    assert fingerprint_canonical(canonical_triangles(tris, force_ranked=True)) == fp(tris)


def test_parts_wider_than_the_packed_range_use_ranked_keys(part):
    wide = np.concatenate([part.triangles, part.triangles + [3000.0, 0.0, 0.0]])
    canon = canonical_triangles(wide.astype(np.float32))
    assert canon.table is not None
    shuffled = wide[::-1][:, [1, 2, 0]]
    assert fp(shuffled) == fp(wide)
