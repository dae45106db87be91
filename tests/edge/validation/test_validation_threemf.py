"""3MF reading: units, objects, components, build transforms, and hostile packages refused."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
import trimesh
from meshfiles import CONTENT_TYPES, RELS, model_xml, write_3mf, write_mesh_3mf

from edge.validation.errors import InvalidBuildFile
from edge.validation.fingerprint import geometry_fingerprint
from edge.validation.limits import ValidationLimits
from edge.validation.threemf import read_3mf_bytes


def refuse(data: bytes, **kw) -> InvalidBuildFile:
    with pytest.raises(InvalidBuildFile) as info:
        read_3mf_bytes(data, where="part.3mf", **kw)
    return info.value


def translation(x, y, z):
    m = np.eye(4)
    m[:3, 3] = [x, y, z]
    return m


def test_single_object_reads_in_mm(tmp_path, part):
    mesh = read_3mf_bytes(write_mesh_3mf(tmp_path / "p.3mf", part).read_bytes())
    assert mesh.format == "3mf" and mesh.unit == "millimeter" and mesh.unit_declared
    assert mesh.triangle_count == 1280 and mesh.parts == 1
    assert np.array_equal(mesh.triangles, part.triangles.astype(np.float32))


@pytest.mark.parametrize(
    ("unit", "per_mm"), [("micron", 1000.0), ("centimeter", 0.1), ("inch", 1 / 25.4), ("foot", 1 / 304.8), ("meter", 0.001)]
)
def test_units_are_converted_to_mm(tmp_path, part, unit, per_mm):
    scaled = part.copy()
    scaled.apply_scale(per_mm)
    mesh = read_3mf_bytes(write_mesh_3mf(tmp_path / "p.3mf", scaled, unit=unit).read_bytes())
    assert mesh.unit == unit
    assert np.allclose(mesh.triangles, part.triangles, atol=1e-5)


def test_unknown_unit_is_refused(tmp_path, part):
    err = refuse(write_mesh_3mf(tmp_path / "p.3mf", part, unit="furlong").read_bytes())
    assert err.reason == "3MF model unit 'furlong' is not one of micron, millimeter, centimeter, inch, foot, meter"


def test_objects_components_and_build_transforms(tmp_path, part):
    box = trimesh.creation.box(extents=[4, 5, 6])
    rotate = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1])
    objects = [
        {"id": 1, "vertices": part.vertices, "faces": part.faces},
        {"id": 2, "vertices": box.vertices, "faces": box.faces},
        {"id": 3, "components": [(2, translation(0, 0, 10)), (2, rotate)]},
    ]
    items = [(1, None), (3, translation(100, 0, 0))]
    mesh = read_3mf_bytes(write_3mf(tmp_path / "p.3mf", model_xml(objects, items)).read_bytes())
    assert mesh.triangle_count == 1280 + 12 + 12 and mesh.parts == 2
    expected = [
        part.triangles,
        box.copy().apply_transform(translation(100, 0, 10)).triangles,
        box.copy().apply_transform(translation(100, 0, 0) @ rotate).triangles,
    ]
    assert geometry_fingerprint(mesh.triangles) == geometry_fingerprint(np.concatenate(expected))


def test_mirroring_item_keeps_outward_winding(tmp_path, part):
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mesh = read_3mf_bytes(write_mesh_3mf(tmp_path / "p.3mf", part, transform=mirror).read_bytes())
    mirrored = part.copy().apply_transform(mirror)  # trimesh also flips faces for a mirror
    assert mirrored.volume > 0
    assert geometry_fingerprint(mesh.triangles) == geometry_fingerprint(mirrored.triangles)


def test_xml_entity_expansion_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE model [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        '<model unit="millimeter" xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02">&c;</model>'
    )
    err = refuse(write_3mf(tmp_path / "p.3mf", bomb).read_bytes())
    assert err.kind == "xml_entities"
    assert err.reason.startswith("3MF model XML uses a DTD or entities, which are refused")
    assert err.where == "part.3mf:3D/3dmodel.model"


def test_external_entity_is_refused(tmp_path):
    xxe = '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><model>&x;</model>'
    assert refuse(write_3mf(tmp_path / "p.3mf", xxe).read_bytes()).kind == "xml_entities"


def test_zip_bomb_is_refused_from_the_directory_before_decompressing(tmp_path):
    path = write_3mf(tmp_path / "p.3mf", "<model/>", extra={"3D/bomb.bin": b"\0" * (8 << 20)})
    tracemalloc.start()
    err = refuse(path.read_bytes())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.kind == "zip_bomb"
    assert err.reason.startswith("3MF entry '3D/bomb.bin' is compressed ")
    assert err.reason.endswith("expand to 8388608), above the limit of 100:1 (zip bomb)")
    assert peak < 2 << 20  # nothing was decompressed


def test_oversized_entry_and_total_are_refused(tmp_path, part):
    data = write_mesh_3mf(tmp_path / "p.3mf", part).read_bytes()
    err = refuse(data, limits=ValidationLimits(max_member_bytes=10_000))
    assert err.reason.startswith("3MF entry '3D/3dmodel.model' expands to ")
    assert err.reason.endswith("bytes, above the limit of 10000")
    err = refuse(data, limits=ValidationLimits(max_total_uncompressed_bytes=10_000))
    assert err.reason.endswith("bytes in total, above the limit of 10000")


def test_entry_expanding_beyond_its_declared_size_is_refused(tmp_path, part):
    raw = bytearray(write_mesh_3mf(tmp_path / "p.3mf", part).read_bytes())
    package = zipfile.ZipFile(io.BytesIO(bytes(raw)))
    info = package.getinfo("3D/3dmodel.model")
    true_size = info.file_size
    # Lie in both the local header and the central directory: claim 1000 bytes.
    lie = (1000).to_bytes(4, "little")
    truth = true_size.to_bytes(4, "little")
    assert raw.count(truth) >= 2
    raw = bytearray(bytes(raw).replace(truth, lie))
    err = refuse(bytes(raw))
    # zipfile stops at the declared size, so the bytes beyond it never reach the parser; the CRC says why.
    assert err.kind == "bad_zip"
    assert err.reason == "3MF entry '3D/3dmodel.model' is corrupt (Bad CRC-32 for file '3D/3dmodel.model')"


@pytest.mark.parametrize("name", ["../evil.model", "/etc/passwd", "3D\\..\\x.model", "C:/x.model", "3D/../../x"])
def test_path_traversal_entries_are_refused(tmp_path, part, name):
    path = write_3mf(tmp_path / "p.3mf", model_xml([{"id": 1, "vertices": part.vertices, "faces": part.faces}], [(1, None)]))
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # bypass zipfile's own normalisation, as a hostile writer would
        z.writestr(info, b"x")
    err = refuse(path.read_bytes())
    assert err.kind == "zip_path"
    assert err.reason == f"3MF entry name {name!r} is absolute or escapes the package (path traversal)"


def test_duplicate_entries_are_refused(tmp_path, part):
    path = write_mesh_3mf(tmp_path / "p.3mf", part)
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as z:
        z.writestr("3D/3dmodel.model", "<model/>")
    assert refuse(path.read_bytes()).reason == "3MF entry '3D/3dmodel.model' appears twice; which one is meant is ambiguous"


def test_too_many_entries_are_refused(tmp_path):
    path = write_3mf(tmp_path / "p.3mf", "<model/>", extra={f"Metadata/{i}.txt": b"x" for i in range(20)})
    err = refuse(path.read_bytes(), limits=ValidationLimits(max_zip_members=10))
    assert err.reason == "3MF package has 23 entries, above the limit of 10"


def test_not_a_zip_and_missing_model_are_refused(tmp_path):
    assert refuse(b"PK\x03\x04 but not really a zip").kind == "bad_zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
    assert refuse(buf.getvalue()).reason == "3MF package has no model part '3D/3dmodel.model'"


def test_malformed_xml_is_refused(tmp_path):
    err = refuse(write_3mf(tmp_path / "p.3mf", "<model><resources></model>").read_bytes())
    assert err.kind == "xml_syntax"
    assert err.reason.startswith("3MF model XML is malformed (mismatched tag: line 1")


def test_deep_nesting_is_refused(tmp_path):
    deep = "<model>" + "<a>" * 100 + "</a>" * 100 + "</model>"
    assert refuse(write_3mf(tmp_path / "p.3mf", deep).read_bytes()).reason == "3MF model XML nests deeper than 32 elements"


def test_triangle_index_out_of_range_is_refused(tmp_path, part):
    faces = part.faces.copy()
    faces[7] = [0, 1, 9999]
    model = model_xml([{"id": 1, "vertices": part.vertices, "faces": faces}], [(1, None)])
    err = refuse(write_3mf(tmp_path / "p.3mf", model).read_bytes())
    assert err.reason == "3MF object 1: triangle 8 refers to vertex [0, 1, 9999] but the object has 642 vertices"


def test_nan_vertex_is_refused(tmp_path, part):
    vertices = part.vertices.copy()
    vertices[part.faces[3, 0]] = np.nan
    model = model_xml([{"id": 1, "vertices": vertices, "faces": part.faces}], [(1, None)])
    err = refuse(write_3mf(tmp_path / "p.3mf", model).read_bytes())
    assert err.kind == "non_finite"


def test_component_cycle_is_refused(tmp_path):
    objects = [{"id": 1, "components": [(2, None)]}, {"id": 2, "components": [(1, None)]}]
    err = refuse(write_3mf(tmp_path / "p.3mf", model_xml(objects, [(1, None)])).read_bytes())
    assert err.reason == "3MF components form a cycle: 1 -> 2 -> 1"


def test_components_multiplying_into_billions_are_refused_before_copying(tmp_path):
    box = trimesh.creation.box()
    objects = [{"id": 1, "vertices": box.vertices, "faces": box.faces}]
    for level in range(2, 12):  # each level holds 10 of the previous: 12 * 10^10 triangles
        objects.append({"id": level, "components": [(level - 1, translation(i, 0, 0)) for i in range(10)]})
    tracemalloc.start()
    err = refuse(write_3mf(tmp_path / "p.3mf", model_xml(objects, [(11, None)])).read_bytes())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.kind == "too_many_triangles"
    assert err.reason == "3MF object 7 expands to 12000000 triangles through its components, above the limit of 10000000"
    assert peak < 5 << 20


def test_unsupported_extension_and_other_parts_are_refused(tmp_path, part):
    obj = [{"id": 1, "vertices": part.vertices, "faces": part.faces}]
    slice_ns = ' xmlns:s="http://schemas.microsoft.com/3dmanufacturing/slice/2015/07" requiredextensions="s"'
    err = refuse(write_3mf(tmp_path / "a.3mf", model_xml(obj, [(1, None)], extra_attrs=slice_ns)).read_bytes())
    assert err.reason == (
        "3MF model requires extension 'http://schemas.microsoft.com/3dmanufacturing/slice/2015/07', "
        "which this reader does not support"
    )
    prod = model_xml(obj, [(1, None)], extra_attrs=' xmlns:p="http://schemas.microsoft.com/3dmanufacturing/production/2015/06"')
    prod = prod.replace('<item objectid="1"', '<item p:path="/3D/other.model" objectid="1"')
    err = refuse(write_3mf(tmp_path / "b.3mf", prod).read_bytes())
    assert err.kind == "threemf_unsupported"


def test_no_build_items_and_empty_mesh_are_refused(tmp_path, part):
    obj = [{"id": 1, "vertices": part.vertices, "faces": part.faces}]
    assert refuse(write_3mf(tmp_path / "a.3mf", model_xml(obj, [])).read_bytes()).reason == (
        "3MF model has no build items: nothing would be built"
    )
    empty = [{"id": 1, "vertices": np.zeros((0, 3)), "faces": np.zeros((0, 3), int)}]
    assert refuse(write_3mf(tmp_path / "b.3mf", model_xml(empty, [(1, None)])).read_bytes()).kind == "empty"


def test_colour_and_material_attributes_are_ignored(tmp_path, part):
    ext = ' xmlns:m="http://schemas.microsoft.com/3dmanufacturing/material/2015/02"'
    model = model_xml([{"id": 1, "vertices": part.vertices, "faces": part.faces}], [(1, None)], extra_attrs=ext)
    model = model.replace("<resources>", '<resources><m:colorgroup id="9"><m:color color="#FF0000"/></m:colorgroup>')
    model = model.replace('<object id="1" type="model">', '<object id="1" type="model" pid="9" pindex="0">')
    mesh = read_3mf_bytes(write_3mf(tmp_path / "p.3mf", model).read_bytes())
    assert geometry_fingerprint(mesh.triangles) == geometry_fingerprint(part.triangles)
