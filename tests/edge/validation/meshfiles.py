"""Mesh and build-file writers for the validation tests (importable by name; fixtures in conftest.py)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import trimesh

CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
    "</Types>"
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Target="/3D/3dmodel.model" Id="rel0" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>'
)


def part_mesh() -> trimesh.Trimesh:
    """A small closed, outward-wound test part placed away from the origin (mm)."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    mesh.apply_translation([30.0, 20.0, 15.0])
    return mesh


def write_binary_stl(path: Path, triangles: np.ndarray, header: bytes = b"amtrace test part") -> Path:
    """Binary STL of (n, 3, 3) triangles; header padded to 80 bytes."""
    tris = np.asarray(triangles, dtype=np.float32).reshape(-1, 3, 3)
    records = np.zeros(len(tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["v"] = tris
    with open(path, "wb") as f:
        f.write(header[:80].ljust(80, b" "))
        f.write(struct.pack("<I", len(tris)))
        f.write(records.tobytes())
    return path


def write_ascii_stl(path: Path, triangles: np.ndarray, number: str = "{!r}") -> Path:
    """ASCII STL of (n, 3, 3) triangles, numbers formatted with `number` (default: full float64 repr)."""
    lines = ["solid part"]
    for tri in np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3):
        lines += ["  facet normal 0 0 0", "    outer loop"]
        lines += ["      vertex " + " ".join(number.format(float(v)) for v in vertex) for vertex in tri]
        lines += ["    endloop", "  endfacet"]
    lines.append("endsolid part")
    path.write_text("\n".join(lines) + "\n")
    return path


def model_xml(objects, items, unit: str = "millimeter", extra_attrs: str = "") -> str:
    """3MF model XML. objects: list of dicts with id and either vertices+faces or components [(id, transform)]."""
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<model unit="{unit}" xmlns="{CORE_NS}"{extra_attrs}><resources>']
    for obj in objects:
        out.append(f'<object id="{obj["id"]}" type="model">')
        if "components" in obj:
            out.append("<components>")
            for ref, transform in obj["components"]:
                attr = f' transform="{_transform_text(transform)}"' if transform is not None else ""
                out.append(f'<component objectid="{ref}"{attr}/>')
            out.append("</components>")
        else:
            out.append("<mesh><vertices>")
            out += [f'<vertex x="{x!r}" y="{y!r}" z="{z!r}"/>' for x, y, z in np.asarray(obj["vertices"], dtype=float).tolist()]
            out.append("</vertices><triangles>")
            out += [f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in np.asarray(obj["faces"]).tolist()]
            out.append("</triangles></mesh>")
        out.append("</object>")
    out.append("</resources><build>")
    for ref, transform in items:
        attr = f' transform="{_transform_text(transform)}"' if transform is not None else ""
        out.append(f'<item objectid="{ref}"{attr}/>')
    out.append("</build></model>")
    return "".join(out)


def _transform_text(matrix4: np.ndarray) -> str:
    """A 4x4 column-vector transform as 3MF's 12 numbers (row-vector convention, m00 m01 m02 ... m32)."""
    m = np.asarray(matrix4, dtype=float)
    return " ".join(repr(float(v)) for v in m[:3, :4].T.reshape(-1))


def write_3mf(path: Path, model: str | bytes, extra: dict[str, bytes] | None = None, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A 3MF package around model XML, with optional extra entries."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        z.writestr("3D/3dmodel.model", model)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


def write_mesh_3mf(path: Path, mesh: trimesh.Trimesh, unit: str = "millimeter", transform=None) -> Path:
    """A one-object 3MF of a trimesh mesh."""
    obj = {"id": 1, "vertices": mesh.vertices, "faces": mesh.faces}
    return write_3mf(path, model_xml([obj], [(1, transform)], unit=unit))
