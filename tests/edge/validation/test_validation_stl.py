"""STL reading: binary/ASCII detection, and every broken or hostile STL refused with its message."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
import trimesh
from meshfiles import write_ascii_stl, write_binary_stl

from edge.validation.errors import InvalidBuildFile
from edge.validation.limits import ValidationLimits
from edge.validation.stl import read_stl_bytes


def refuse(data: bytes, **kw) -> InvalidBuildFile:
    with pytest.raises(InvalidBuildFile) as info:
        read_stl_bytes(data, where="part.stl", **kw)
    return info.value


def test_binary_stl_reads_every_triangle(tmp_path, part):
    path = write_binary_stl(tmp_path / "p.stl", part.triangles)
    mesh = read_stl_bytes(path.read_bytes())
    assert mesh.format == "stl-binary"
    assert mesh.triangle_count == 1280
    assert np.allclose(mesh.triangles, part.triangles, atol=1e-5)
    assert mesh.unit == "millimeter" and not mesh.unit_declared


def test_trimesh_binary_export_reads(tmp_path, part):
    data = trimesh.exchange.stl.export_stl(part)
    assert read_stl_bytes(data).triangle_count == 1280


def test_binary_stl_whose_header_starts_with_solid_is_read_as_binary(tmp_path, part):
    path = write_binary_stl(tmp_path / "p.stl", part.triangles, header=b"solid exported by a CAD tool")
    mesh = read_stl_bytes(path.read_bytes())
    assert mesh.format == "stl-binary"
    assert mesh.triangle_count == 1280


def test_ascii_stl_reads_and_matches_binary(tmp_path, part):
    path = write_ascii_stl(tmp_path / "p.stl", part.triangles)
    mesh = read_stl_bytes(path.read_bytes())
    assert mesh.format == "stl-ascii"
    assert mesh.triangle_count == 1280
    assert np.array_equal(mesh.triangles, part.triangles.astype(np.float32))


def test_trimesh_ascii_export_and_multiple_solids(part):
    text = trimesh.exchange.stl.export_stl_ascii(part)
    mesh = read_stl_bytes((text + text.replace("solid", "solid second", 1)).encode())
    assert mesh.triangle_count == 2560 and mesh.parts == 2


def test_ascii_keywords_in_upper_case_are_accepted(part):
    text = trimesh.exchange.stl.export_stl_ascii(part).upper()
    assert read_stl_bytes(text.encode()).triangle_count == 1280


def test_truncated_binary_stl_is_refused(tmp_path, part):
    data = write_binary_stl(tmp_path / "p.stl", part.triangles).read_bytes()
    err = refuse(data[:1000])
    assert err.kind == "stl_count_mismatch"
    assert err.message == (
        "binary STL declares 1280 triangles but the file holds 18 and 16 stray bytes "
        "(size 1000 bytes; 1280 triangles need 64084 bytes) (part.stl)"
    )


def test_file_shorter_than_the_binary_header_is_refused():
    err = refuse(b"\x00\x01" * 20)
    assert err.kind == "truncated"
    assert "truncated binary STL: 40 bytes" in err.message


def test_declared_count_disagreeing_with_size_is_refused():
    data = b"\x00" * 80 + struct.pack("<I", 1_000_000) + b"\x00" * 600
    err = refuse(data)
    assert err.reason == (
        "binary STL declares 1000000 triangles but the file holds 12 (size 684 bytes; "
        "1000000 triangles need 50000084 bytes)"
    )


def test_billions_of_triangles_claimed_is_refused_without_allocating():
    data = b"\x00" * 80 + struct.pack("<I", 4_000_000_000) + b"\x00" * 600
    tracemalloc.start()
    err = refuse(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.kind == "too_many_triangles"
    assert err.reason == (
        "binary STL declares 4000000000 triangles, above the limit of 10000000 (the file's 684 bytes hold 12)"
    )
    assert peak < 1 << 20


def test_binary_with_solid_header_and_wrong_count_names_both(tmp_path, part):
    data = write_binary_stl(tmp_path / "p.stl", part.triangles, header=b"solid fake").read_bytes()[:-7]
    err = refuse(data)
    assert err.kind == "stl_count_mismatch"
    assert err.reason.startswith("binary STL whose header begins with 'solid' declares 1280 triangles but the file holds 1279")


def test_ascii_stl_with_garbage_is_refused_with_line(tmp_path, part):
    path = write_ascii_stl(tmp_path / "p.stl", part.triangles[:3])
    lines = path.read_text().splitlines()
    lines[10] = "      vertex 1.0 2.0 1.2.3"
    err = refuse("\n".join(lines).encode())
    assert err.kind == "ascii_syntax"
    assert err.reason == "ASCII STL: '1.2.3' is not a number, in facet 2 (from line 9)"
    lines[10] = "      vertex 1.0 2.0 abc"
    err = refuse("\n".join(lines).encode())
    assert err.reason == "ASCII STL: unexpected byte b'b' at line 11; STL text holds only keywords and numbers"


def test_ascii_stl_with_binary_bytes_is_refused():
    data = b"solid x\n  facet normal 0 0 0\n    outer loop\n      vertex 1 2 3\n" + b"\x00\xff\x10" * 5
    data = data + b"\n" * 4096  # the control bytes sit past the sniffed head
    data = b"solid x\n" + b" " * 5000 + data[8:]
    err = refuse(data)
    assert err.kind == "ascii_syntax"
    assert err.reason.startswith("ASCII STL: unexpected byte b'\\x00' at line 5")


def test_ascii_stl_with_missing_keyword_is_refused(tmp_path, part):
    path = write_ascii_stl(tmp_path / "p.stl", part.triangles[:3])
    text = path.read_text().replace("endloop", "endlop", 1)
    err = refuse(text.encode())
    assert err.reason == "ASCII STL: expected 'endloop' but found 'endlop' in facet 1 (from line 2)"


def test_truncated_ascii_stl_is_refused(tmp_path, part):
    text = write_ascii_stl(tmp_path / "p.stl", part.triangles[:3]).read_text()
    err = refuse(text[: text.index("vertex", 200) + 12].encode())
    assert err.kind == "truncated"
    assert err.reason.startswith("ASCII STL: facet 2 is incomplete, it ends after")
    err = refuse(text[: text.rindex("endsolid")].encode())
    assert err.reason == "ASCII STL ends after 3 facets without 'endsolid': the file is truncated"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_coordinates_are_refused_ascii(tmp_path, part, bad):
    path = write_ascii_stl(tmp_path / "p.stl", part.triangles[:4])
    lines = path.read_text().splitlines()
    lines[17] = f"      vertex 1.0 {bad} 3.0"
    err = refuse("\n".join(lines).encode())
    assert err.kind == "non_finite"
    assert err.reason.startswith("triangle 3 has a non-finite coordinate")


def test_non_finite_coordinates_are_refused_binary(tmp_path, part):
    tris = part.triangles.copy()
    tris[100, 1, 2] = np.nan
    err = refuse(write_binary_stl(tmp_path / "p.stl", tris).read_bytes())
    assert err.reason == "triangle 101 has a non-finite coordinate (nan); NaN or infinite coordinates are refused"


def test_coordinates_beyond_the_limit_are_refused(tmp_path, part):
    tris = part.triangles.copy()
    tris[5, 0, 0] = 1e9
    err = refuse(write_binary_stl(tmp_path / "p.stl", tris).read_bytes())
    assert err.kind == "coordinate_range"
    assert err.reason == "triangle 6 has coordinate 1e+09 mm, beyond the limit of ±100000 mm"


def test_empty_meshes_are_refused(tmp_path):
    assert refuse(b"\x00" * 80 + struct.pack("<I", 0)).reason == "binary STL holds no triangles (empty mesh)"
    assert refuse(b"solid empty\nendsolid empty\n").reason == "ASCII STL holds no triangles (empty mesh)"
    assert refuse(b"").kind == "truncated"


def test_text_that_is_not_stl_is_refused():
    err = refuse(b"hello, this is a plain text file and certainly not a mesh at all " * 3)
    assert err.kind == "not_stl"
    assert err.reason == "not an STL file: 195 bytes of text that do not start with 'solid'"


def test_triangle_limit_applies_to_ascii(tmp_path, part):
    path = write_ascii_stl(tmp_path / "p.stl", part.triangles[:20])
    err = refuse(path.read_bytes(), limits=ValidationLimits(max_triangles=10))
    assert err.reason == "ASCII STL holds more than 10 triangles (the limit)"
