"""3MF reading (core specification) that refuses hostile packages before and while decompressing.

A 3MF file is a zip (OPC package) holding an XML model. What is supported:

- the model part named by the package relationship in _rels/.rels (default 3D/3dmodel.model);
- units micron, millimeter, centimeter, inch, foot, meter, converted to millimetres;
- several objects, each a mesh or a set of components (objects placed by a 3x4 transform), nested
  up to `ValidationLimits.max_component_depth`;
- build items with 3x4 transforms; the geometry is the union of all build items in build-plate
  coordinates. A mirroring transform (negative determinant) reverses triangle winding so outward
  normals stay outward;
- colours and materials (pid/p1 attributes, the materials extension) are ignored: they do not change
  the geometry.

What is refused, each with a message: a file that is not a zip; more entries than the limit;
entries whose names are absolute, contain '..' or backslashes, or repeat another entry's name;
encrypted entries and compression other than stored/deflate; an entry larger than the limit or
compressed more than the limit ratio (checked from the zip directory before decompressing, and
enforced again while streaming, since directory sizes can lie); XML with a DTD, entities or external
references (defusedxml); XML nested deeper than the limit; required extensions other than
materials; components or items in other model parts (production extension, p:path); triangle
indices outside the vertex list; component cycles or nesting deeper than the limit; more triangles
in total (after expanding components) than the limit, counted before any triangle is copied; no
build items; an empty result.
"""

from __future__ import annotations

import io
import zipfile
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as safe_et
import numpy as np

from .errors import InvalidBuildFile
from .limits import ValidationLimits
from .meshfile import MeshFile, check_coordinates

CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MATERIAL_NS = "http://schemas.microsoft.com/3dmanufacturing/material/2015/02"
PRODUCTION_NS = "http://schemas.microsoft.com/3dmanufacturing/production/2015/06"
MODEL_RELATIONSHIP = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
DEFAULT_MODEL = "3D/3dmodel.model"
UNIT_TO_MM = {"micron": 0.001, "millimeter": 1.0, "centimeter": 10.0, "inch": 25.4, "foot": 304.8, "meter": 1000.0}
SUPPORTED_EXTENSIONS = {CORE_NS, MATERIAL_NS}
RATIO_CHECK_FLOOR = 1 << 20  # entries smaller than 1 MiB cannot be a bomb whatever their ratio
READ_CHUNK = 1 << 20
IDENTITY = np.hstack([np.eye(3), np.zeros((3, 1))])  # 3x4: rotation/scale | translation


@dataclass
class _Object:
    object_id: str
    kind: str
    vertices: np.ndarray | None = None  # (v, 3) float64, model units
    triangles: np.ndarray | None = None  # (t, 3) int64
    components: list[tuple[str, np.ndarray]] = field(default_factory=list)


def read_3mf_bytes(data: bytes, *, limits: ValidationLimits | None = None, where: str = "") -> MeshFile:
    """Parse a 3MF package held in memory into triangles in mm, or raise InvalidBuildFile."""
    limits = limits or ValidationLimits()
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InvalidBuildFile(f"not a 3MF file: the zip package cannot be read ({exc})", where, kind="bad_zip") from None
    with package:
        infos = _checked_entries(package, limits, where)
        model_name = _model_part_name(package, infos, limits, where)
        if model_name not in infos:
            raise InvalidBuildFile(
                f"3MF package has no model part '{model_name}'", where, kind="threemf_structure"
            )
        with _BoundedReader(package, infos[model_name], limits, where) as stream:
            unit, objects, items = _parse_model(stream, limits, f"{where}:{model_name}" if where else model_name)
    return _build_geometry(unit, objects, items, limits, where)


def _checked_entries(package: zipfile.ZipFile, limits: ValidationLimits, where: str) -> dict[str, zipfile.ZipInfo]:
    """Refuse hostile zip directories before any entry is decompressed."""
    infos = package.infolist()
    if len(infos) > limits.max_zip_members:
        raise InvalidBuildFile(
            f"3MF package has {len(infos)} entries, above the limit of {limits.max_zip_members}",
            where,
            kind="zip_limits",
        )
    by_name: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if (
            name.startswith(("/", "\\"))
            or "\\" in name
            or ".." in parts
            or "\x00" in name
            or (len(name) > 1 and name[1] == ":")
        ):
            raise InvalidBuildFile(
                f"3MF entry name {name!r} is absolute or escapes the package (path traversal)",
                where,
                kind="zip_path",
            )
        key = name.lstrip("/")
        if key in by_name:
            raise InvalidBuildFile(
                f"3MF entry {name!r} appears twice; which one is meant is ambiguous", where, kind="zip_path"
            )
        if info.flag_bits & 0x1:
            raise InvalidBuildFile(f"3MF entry {name!r} is encrypted", where, kind="zip_limits")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidBuildFile(
                f"3MF entry {name!r} uses compression method {info.compress_type}; 3MF allows only stored or deflate",
                where,
                kind="zip_limits",
            )
        if info.file_size > limits.max_member_bytes:
            raise InvalidBuildFile(
                f"3MF entry {name!r} expands to {info.file_size} bytes, above the limit of {limits.max_member_bytes}",
                where,
                kind="zip_bomb",
            )
        if info.file_size > RATIO_CHECK_FLOOR:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise InvalidBuildFile(
                    f"3MF entry {name!r} is compressed {ratio:.0f}:1 ({info.compress_size} bytes expand to "
                    f"{info.file_size}), above the limit of {limits.max_compression_ratio:g}:1 (zip bomb)",
                    where,
                    kind="zip_bomb",
                )
        total += info.file_size
        by_name[key] = info
    if total > limits.max_total_uncompressed_bytes:
        raise InvalidBuildFile(
            f"3MF entries expand to {total} bytes in total, above the limit of {limits.max_total_uncompressed_bytes}",
            where,
            kind="zip_bomb",
        )
    return by_name


class _BoundedReader(io.RawIOBase):
    """A zip entry stream that stops with InvalidBuildFile once it yields more than the directory promised."""

    def __init__(self, package: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ValidationLimits, where: str) -> None:
        super().__init__()
        self._stream = package.open(info)
        self._info = info
        self._where = where
        self._left = info.file_size  # the directory's size, already checked against the limits
        self._ratio_limit = limits.max_compression_ratio

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - RawIOBase signature
        try:
            chunk = self._stream.read(min(len(buffer), READ_CHUNK))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise InvalidBuildFile(
                f"3MF entry {self._info.filename!r} is corrupt ({exc})", self._where, kind="bad_zip"
            ) from None
        n = len(chunk)
        self._left -= n
        if self._left < 0:
            raise InvalidBuildFile(
                f"3MF entry {self._info.filename!r} expands beyond the {self._info.file_size} bytes its directory declares",
                self._where,
                kind="zip_bomb",
            )
        buffer[:n] = chunk
        return n

    def close(self) -> None:
        self._stream.close()
        super().close()


def _model_part_name(package: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], limits: ValidationLimits, where: str) -> str:
    """The model part named by the package relationships, or the default name."""
    rels = infos.get("_rels/.rels")
    if rels is None:
        return DEFAULT_MODEL
    with _BoundedReader(package, rels, limits, where) as stream:
        root = _parse_small_xml(stream, f"{where}:_rels/.rels" if where else "_rels/.rels")
    for rel in root.iter(f"{{{RELS_NS}}}Relationship"):
        if rel.get("Type") == MODEL_RELATIONSHIP and rel.get("Target"):
            return rel.get("Target").lstrip("/")
    return DEFAULT_MODEL


def _parse_small_xml(stream: BinaryIO, where: str):
    try:
        return safe_et.parse(stream, forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except defusedxml.DefusedXmlException as exc:
        raise InvalidBuildFile(f"3MF XML uses a DTD or entities, which are refused ({exc})", where, kind="xml_entities") from None
    except ParseError as exc:
        raise InvalidBuildFile(f"3MF XML is malformed ({exc})", where, kind="xml_syntax") from None


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _parse_model(stream: BinaryIO, limits: ValidationLimits, where: str) -> tuple[str, dict[str, _Object], list[tuple[str, np.ndarray]]]:
    """Stream the model XML, keeping only numbers: memory stays near 24 bytes per vertex and per triangle."""
    unit = "millimeter"
    objects: dict[str, _Object] = {}
    items: list[tuple[str, np.ndarray]] = []
    stack: list = []
    prefixes: dict[str, str] = {}
    current: _Object | None = None
    coords = array("d")
    indices = array("q")
    try:
        for event, elem in safe_et.iterparse(
            stream, events=("start", "end", "start-ns"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        ):
            if event == "start-ns":
                prefix, uri = elem
                prefixes[prefix] = uri
                continue
            ns, name = _local(elem.tag)
            core = ns in (CORE_NS, "")
            if event == "start":
                stack.append(elem)
                if len(stack) > limits.max_xml_depth:
                    raise InvalidBuildFile(
                        f"3MF model XML nests deeper than {limits.max_xml_depth} elements", where, kind="xml_limits"
                    )
                if not core:
                    continue
                if name == "model":
                    unit = elem.get("unit", "millimeter")
                    if unit not in UNIT_TO_MM:
                        raise InvalidBuildFile(
                            f"3MF model unit '{unit}' is not one of {', '.join(UNIT_TO_MM)}", where, kind="threemf_units"
                        )
                    for prefix in (elem.get("requiredextensions") or "").split():
                        uri = prefixes.get(prefix, prefix)
                        if uri not in SUPPORTED_EXTENSIONS:
                            raise InvalidBuildFile(
                                f"3MF model requires extension '{uri}', which this reader does not support",
                                where,
                                kind="threemf_unsupported",
                            )
                elif name == "object":
                    object_id = elem.get("id")
                    if not object_id:
                        raise InvalidBuildFile("3MF object without an id", where, kind="threemf_structure")
                    if object_id in objects:
                        raise InvalidBuildFile(f"3MF object id {object_id} is used twice", where, kind="threemf_structure")
                    current = _Object(object_id=object_id, kind=elem.get("type", "model"))
                    coords = array("d")
                    indices = array("q")
                continue
            # end event
            stack.pop()
            if not core:
                elem.clear()
                continue
            if name == "vertex":
                try:
                    coords.extend((float(elem.get("x")), float(elem.get("y")), float(elem.get("z"))))
                except (TypeError, ValueError):
                    raise InvalidBuildFile(
                        f"3MF vertex {len(coords) // 3 + 1} of object {current.object_id if current else '?'} has a "
                        f"missing or non-numeric coordinate ({dict(elem.attrib)})",
                        where,
                        kind="threemf_structure",
                    ) from None
                stack[-1].clear()  # drop the finished element from its parent: memory stays flat
            elif name == "triangle":
                try:
                    indices.extend((int(elem.get("v1")), int(elem.get("v2")), int(elem.get("v3"))))
                except (TypeError, ValueError):
                    raise InvalidBuildFile(
                        f"3MF triangle {len(indices) // 3 + 1} of object {current.object_id if current else '?'} has a "
                        f"missing or non-integer vertex index ({dict(elem.attrib)})",
                        where,
                        kind="threemf_structure",
                    ) from None
                if len(indices) > 3 * limits.max_triangles:
                    raise InvalidBuildFile(
                        f"3MF object holds more than {limits.max_triangles} triangles (the limit)",
                        where,
                        kind="too_many_triangles",
                    )
                stack[-1].clear()
            elif name == "component":
                _refuse_other_part(elem, "component", where)
                if current is None:
                    raise InvalidBuildFile("3MF component outside an object", where, kind="threemf_structure")
                current.components.append((_required(elem, "objectid", where), _transform(elem, where)))
            elif name == "object" and current is not None:
                if coords or indices:
                    vertices = np.frombuffer(coords, dtype=np.float64).reshape(-1, 3).copy()
                    triangles = np.frombuffer(indices, dtype=np.int64).reshape(-1, 3).copy()
                    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
                        bad = int(np.flatnonzero(((triangles < 0) | (triangles >= len(vertices))).any(axis=1))[0])
                        raise InvalidBuildFile(
                            f"3MF object {current.object_id}: triangle {bad + 1} refers to vertex "
                            f"{triangles[bad].tolist()} but the object has {len(vertices)} vertices",
                            where,
                            kind="threemf_structure",
                        )
                    current.vertices, current.triangles = vertices, triangles
                objects[current.object_id] = current
                current = None
                coords, indices = array("d"), array("q")
                stack[-1].clear()
            elif name == "item":
                _refuse_other_part(elem, "build item", where)
                items.append((_required(elem, "objectid", where), _transform(elem, where)))
    except defusedxml.DefusedXmlException as exc:
        raise InvalidBuildFile(
            f"3MF model XML uses a DTD or entities, which are refused (entity expansion / external entity attack): {exc}",
            where,
            kind="xml_entities",
        ) from None
    except ParseError as exc:
        raise InvalidBuildFile(f"3MF model XML is malformed ({exc})", where, kind="xml_syntax") from None
    return unit, objects, items


def _required(elem, attribute: str, where: str) -> str:
    value = elem.get(attribute)
    if not value:
        raise InvalidBuildFile(f"3MF <{_local(elem.tag)[1]}> without {attribute}", where, kind="threemf_structure")
    return value


def _refuse_other_part(elem, what: str, where: str) -> None:
    if elem.get(f"{{{PRODUCTION_NS}}}path"):
        raise InvalidBuildFile(
            f"3MF {what} refers to another model part ({elem.get(f'{{{PRODUCTION_NS}}}path')}); the production "
            "extension is not supported",
            where,
            kind="threemf_unsupported",
        )


def _transform(elem, where: str) -> np.ndarray:
    """The 3MF transform attribute as a 3x4 matrix acting on column vectors [x, y, z, 1]."""
    text = elem.get("transform")
    if text is None:
        return IDENTITY
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        values = []
    if len(values) != 12 or not all(np.isfinite(values)):
        raise InvalidBuildFile(
            f"3MF transform '{text[:200]}' is not 12 finite numbers", where, kind="threemf_structure"
        )
    # 3MF writes the matrix row-major as m00 m01 m02 m10 ... m32 and multiplies row vectors:
    # [x y z 1] . M (4x3). Transposed, that is a 3x4 matrix acting on column vectors.
    return np.array(values).reshape(4, 3).T.copy()


def _build_geometry(unit: str, objects: dict[str, _Object], items: list[tuple[str, np.ndarray]], limits: ValidationLimits, where: str) -> MeshFile:
    """Expand build items and components into one triangle array in mm, after counting what it will hold."""
    if not items:
        raise InvalidBuildFile("3MF model has no build items: nothing would be built", where, kind="empty")
    counts: dict[str, int] = {}

    def count(object_id: str, depth: int, path: tuple[str, ...]) -> int:
        if object_id in path:
            raise InvalidBuildFile(
                f"3MF components form a cycle: {' -> '.join(path + (object_id,))}", where, kind="threemf_structure"
            )
        if depth > limits.max_component_depth:
            raise InvalidBuildFile(
                f"3MF components nest deeper than {limits.max_component_depth}", where, kind="threemf_structure"
            )
        obj = objects.get(object_id)
        if obj is None:
            raise InvalidBuildFile(f"3MF refers to object {object_id}, which is not defined", where, kind="threemf_structure")
        if object_id not in counts:
            own = 0 if obj.triangles is None else len(obj.triangles)
            total = own + sum(count(child, depth + 1, path + (object_id,)) for child, _ in obj.components)
            # Checked at every level so that nested components multiplying each other (a
            # "billion laughs" made of geometry) stop before the number grows large.
            if total > limits.max_triangles:
                raise InvalidBuildFile(
                    f"3MF object {object_id} expands to {total} triangles through its components, above the limit "
                    f"of {limits.max_triangles}",
                    where,
                    kind="too_many_triangles",
                )
            counts[object_id] = total
        return counts[object_id]

    total = 0
    for object_id, _ in items:
        total += count(object_id, 0, ())
        if total > limits.max_triangles:
            raise InvalidBuildFile(
                f"3MF build expands to more than {limits.max_triangles} triangles (the limit)",
                where,
                kind="too_many_triangles",
            )
    if total == 0:
        raise InvalidBuildFile("3MF build holds no triangles (empty mesh)", where, kind="empty")

    out = np.empty((total, 3, 3), np.float64)
    filled = 0

    def emit(object_id: str, transform: np.ndarray) -> None:
        nonlocal filled
        obj = objects[object_id]
        if obj.triangles is not None and len(obj.triangles):
            placed = obj.vertices @ transform[:, :3].T + transform[:, 3]
            tris = placed[obj.triangles]
            if np.linalg.det(transform[:, :3]) < 0:
                tris = tris[:, [0, 2, 1]]  # a mirror turns the surface inside out; reverse winding
            out[filled : filled + len(tris)] = tris
            filled += len(tris)
        for child, child_transform in obj.components:
            # child placed in parent space, then parent placed in its own parent: T_parent . T_child
            combined = np.empty((3, 4))
            combined[:, :3] = transform[:, :3] @ child_transform[:, :3]
            combined[:, 3] = transform[:, :3] @ child_transform[:, 3] + transform[:, 3]
            emit(child, combined)

    for object_id, transform in items:
        emit(object_id, transform)
    scale = UNIT_TO_MM[unit]
    if scale != 1.0:
        out *= scale
    # Rounded to float32 like STL coordinates, so containers agree (see fingerprint.py).
    limits_check = out.astype(np.float32)
    check_coordinates(limits_check, limits, where)
    return MeshFile(
        triangles=limits_check,
        format="3mf",
        unit=unit,
        unit_declared=True,
        parts=len(items),
        notes=[f"{len(objects)} objects, {len(items)} build items, unit {unit}"],
    )
