"""Verify a build file against its approved design: bytes first, then geometry, then integrity.

The file is read once into memory; the SHA-256 and the parse are computed over those same bytes,
so a file changed while it is being checked cannot pass with a hash of one version and the
geometry of another. Mesh formats are chosen by extension (.stl, .3mf) and confirmed by content;
files of other types (machine build jobs) are checked on their bytes only, streamed in constant
memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from .approvals import ApprovedBuildFile
from .diff import DiffReport, difference_report
from .errors import InvalidBuildFile
from .fingerprint import canonical_order, canonical_triangles, fingerprint_canonical
from .hashing import sha256_file
from .limits import ValidationLimits
from .mesh import Check, MergedMesh, MeshStats, integrity_checks, merge_vertices, mesh_stats
from .meshfile import MeshFile
from .stl import read_stl_bytes
from .threemf import read_3mf_bytes

Verdict = Literal["identical", "geometry_equal", "different", "invalid"]
Progress = Callable[[str, int | None, int | None], None]  # (stage, done, total)
MESH_SUFFIXES = {".stl": "stl", ".3mf": "3mf"}
HASH_STEP = 16 << 20

EXIT_CODES = {"identical": 0, "geometry_equal": 1, "different": 2, "invalid": 3}
EXIT_USAGE = 4
EXIT_CHECK_FAILED = 5


class VerificationResult(BaseModel):
    """The verdict on one build file, every check with its value, and the difference report."""

    model_config = ConfigDict(extra="forbid")

    file: str
    size_bytes: int
    sha256: str | None = Field(description="SHA-256 of the bytes checked (None when the file could not be read)")
    approved_sha256: str | None
    format: str | None = Field(description="stl-binary, stl-ascii, 3mf, or None for a non-mesh file")
    verdict: Verdict
    allowed_to_build: bool
    reasons: list[str] = Field(description="Why the build may or may not start, one sentence each")
    error: str | None = Field(default=None, description="Why the file is invalid, when verdict is 'invalid'")
    error_kind: str | None = None
    geometry_fingerprint: str | None = None
    approved_geometry_fingerprint: str | None = None
    allow_geometry_equal: bool = Field(description="The product's policy for equal geometry in a different file")
    checks: list[Check] = Field(default_factory=list)
    stats: MeshStats | None = None
    diff: DiffReport | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """Process exit code: 0 identical, 1 geometry equal, 2 different, 3 invalid, 5 matched but a check failed."""
        if self.verdict in ("identical", "geometry_equal") and any(not c.passed for c in self.checks):
            return EXIT_CHECK_FAILED
        return EXIT_CODES[self.verdict]


class _Parsed:
    """A parsed mesh with the derived forms the checks, the fingerprint and the diff share."""

    def __init__(self, mesh: MeshFile, timings: dict[str, float], prefix: str, progress: Progress | None) -> None:
        self.mesh = mesh
        start = time.perf_counter()
        _say(progress, f"{prefix}fingerprint")
        canon = canonical_triangles(mesh.triangles)
        self.fingerprint = fingerprint_canonical(canon, canonical_order(canon))
        timings[f"{prefix}fingerprint"] = time.perf_counter() - start
        start = time.perf_counter()
        _say(progress, f"{prefix}checks")
        self.merged: MergedMesh = merge_vertices(canon)
        del canon
        self.stats, _ = mesh_stats(mesh, self.merged)
        timings[f"{prefix}stats"] = time.perf_counter() - start


def verify_build_file(
    path: str | Path,
    *,
    approved_sha256: str | None = None,
    design_path: str | Path | None = None,
    approved: ApprovedBuildFile | None = None,
    build_volume_mm: tuple[float, float, float] | None = None,
    limits: ValidationLimits | None = None,
    allow_geometry_equal: bool | None = None,
    progress: Progress | None = None,
) -> VerificationResult:
    """Check the build file at path against an approved hash, design file or approval record."""
    limits = limits or ValidationLimits()
    path = Path(path)
    timings: dict[str, float] = {}
    policy = bool(allow_geometry_equal if allow_geometry_equal is not None else (approved.allow_geometry_equal if approved else False))
    expected_sha = (approved_sha256 or (approved.sha256 if approved else None) or "").lower() or None
    expected_fp = approved.geometry_fingerprint if approved else None
    base = dict(file=str(path), approved_sha256=expected_sha, allow_geometry_equal=policy, timings_s=timings)

    # The approved design, when given as a file: its hash and geometry are the reference.
    design: _Parsed | None = None
    if design_path is not None:
        try:
            design_bytes, design_kind = _read(Path(design_path), limits, timings, "design_", progress)
            design_sha = _hash(design_bytes, timings, "design_", progress) if design_kind else sha256_file(design_path)
            expected_sha = expected_sha or design_sha
            base["approved_sha256"] = expected_sha
            if design_kind:
                design = _Parsed(_parse(design_bytes, design_kind, str(design_path), limits, timings, "design_"), timings, "design_", progress)
                expected_fp = design.fingerprint
            del design_bytes
        except InvalidBuildFile as exc:
            raise InvalidBuildFile(f"the approved design cannot be read: {exc.reason}", exc.where, kind="design_invalid") from None

    try:
        size = path.stat().st_size
    except OSError as exc:
        return VerificationResult(**base, size_bytes=0, sha256=None, format=None, verdict="invalid", allowed_to_build=False,
                                  reasons=[f"the build file cannot be read: {exc.strerror}"], error=f"cannot read {path}: {exc.strerror}", error_kind="unreadable")

    kind = _mesh_kind(path)
    if kind is None:
        # Not a mesh: bytes are all there is to compare, streamed in constant memory.
        start = time.perf_counter()
        sha = sha256_file(path, (lambda done: progress("sha256", done, size)) if progress else None)
        timings["sha256"] = time.perf_counter() - start
        identical = expected_sha is not None and sha == expected_sha
        return VerificationResult(
            **base, size_bytes=size, sha256=sha, format=None,
            verdict="identical" if identical else "different", allowed_to_build=identical,
            reasons=["bytes are identical to the approved file" if identical else _mismatch_reason(expected_sha),
                     f"not a mesh file ({path.suffix or 'no extension'}): only byte identity was checked"],
        )

    try:
        data, kind = _read(path, limits, timings, "", progress)
        sha = _hash(data, timings, "", progress)
    except InvalidBuildFile as exc:
        return _invalid(base, size, None, None, exc)
    try:
        received = _Parsed(_parse(data, kind, str(path), limits, timings, "", progress), timings, "", progress)
    except InvalidBuildFile as exc:
        return _invalid(base, size, sha, None, exc)
    del data

    start = time.perf_counter()
    checks = integrity_checks(
        received.mesh,
        received.merged,
        received.stats,
        build_volume_mm=build_volume_mm,
        expected_bodies=design.stats.bodies if design else None,
        limits=limits,
    )
    timings["checks"] = time.perf_counter() - start

    reasons: list[str] = []
    diff = None
    if expected_sha is not None and sha == expected_sha:
        verdict: Verdict = "identical"
        reasons.append("bytes are identical to the approved file")
    elif expected_fp is not None and received.fingerprint == expected_fp:
        verdict = "geometry_equal"
        reasons.append(
            f"{_mismatch_reason(expected_sha)}, but the geometry is equal to the approved design "
            f"(same triangles to 1 µm); the product's policy {'allows' if policy else 'does not allow'} building it"
        )
    else:
        verdict = "different"
        reasons.append(_mismatch_reason(expected_sha))
        if expected_fp is None:
            reasons.append("no approved geometry to compare with (only a hash was given)")
        else:
            reasons.append("the geometry differs from the approved design")
        if design is not None:
            _say(progress, "difference report")
            start = time.perf_counter()
            diff = difference_report(design.merged, design.stats, received.merged, received.stats)
            timings["diff"] = time.perf_counter() - start
            reasons.append(diff.summary)

    failed = [c for c in checks if not c.passed]
    reasons += [f"check {c.name} failed: {c.reason}" for c in failed]
    allowed = (verdict == "identical" or (verdict == "geometry_equal" and policy)) and not failed
    return VerificationResult(
        **base, size_bytes=size, sha256=sha, format=received.mesh.format, verdict=verdict, allowed_to_build=allowed,
        reasons=reasons, geometry_fingerprint=received.fingerprint, approved_geometry_fingerprint=expected_fp,
        checks=checks, stats=received.stats, diff=diff,
    )


def _mesh_kind(path: Path) -> str | None:
    kind = MESH_SUFFIXES.get(path.suffix.lower())
    if kind:
        return kind
    try:
        with open(path, "rb") as f:
            head = f.read(5)
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return "3mf"
    if head.lower() == b"solid":
        return "stl"
    return None


def _read(path: Path, limits: ValidationLimits, timings: dict[str, float], prefix: str, progress: Progress | None) -> tuple[bytes, str | None]:
    """Read a file once, refusing it before reading when it is above the size limit."""
    kind = _mesh_kind(path)
    if kind is None:
        return b"", None
    start = time.perf_counter()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limits.max_file_bytes:
            raise InvalidBuildFile(
                f"file of {size} bytes is above the limit of {limits.max_file_bytes} bytes for mesh files",
                str(path),
                kind="file_too_large",
            )
        _say(progress, f"{prefix}read")
        data = f.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise InvalidBuildFile(f"file grew above the limit of {limits.max_file_bytes} bytes while read", str(path), kind="file_too_large")
    timings[f"{prefix}read"] = time.perf_counter() - start
    if kind == "3mf" and data[:4] != b"PK\x03\x04":
        raise InvalidBuildFile("not a 3MF file: no zip signature at the start", str(path), kind="bad_zip")
    return data, kind


def _hash(data: bytes, timings: dict[str, float], prefix: str, progress: Progress | None) -> str:
    start = time.perf_counter()
    digest = hashlib.sha256()
    view = memoryview(data)
    for offset in range(0, len(view), HASH_STEP):
        digest.update(view[offset : offset + HASH_STEP])
        if progress is not None:
            progress(f"{prefix}sha256", min(offset + HASH_STEP, len(view)), len(view))
    timings[f"{prefix}sha256"] = time.perf_counter() - start
    return digest.hexdigest()


def _parse(data: bytes, kind: str, where: str, limits: ValidationLimits, timings: dict[str, float], prefix: str, progress: Progress | None = None) -> MeshFile:
    start = time.perf_counter()
    _say(progress, f"{prefix}parse")
    mesh = read_3mf_bytes(data, limits=limits, where=where) if kind == "3mf" else read_stl_bytes(data, limits=limits, where=where)
    timings[f"{prefix}parse"] = time.perf_counter() - start
    return mesh


def _mismatch_reason(expected_sha: str | None) -> str:
    return "no approved hash was given" if expected_sha is None else "bytes differ from the approved file (SHA-256 mismatch)"


def _invalid(base: dict, size: int, sha: str | None, fmt: str | None, exc: InvalidBuildFile) -> VerificationResult:
    return VerificationResult(
        **base, size_bytes=size, sha256=sha, format=fmt, verdict="invalid", allowed_to_build=False,
        reasons=[f"the build file is refused: {exc.message}"], error=exc.message, error_kind=exc.kind,
    )


def _say(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(stage, None, None)


def read_mesh_file(path: str | Path, *, limits: ValidationLimits | None = None) -> MeshFile | None:
    """Parse an STL/3MF file into a MeshFile; None for a non-mesh file; InvalidBuildFile when broken."""
    limits = limits or ValidationLimits()
    data, kind = _read(Path(path), limits, {}, "", None)
    if kind is None:
        return None
    return _parse(data, kind, str(path), limits, {}, "")


def geometry_fingerprint_file(path: str | Path, *, limits: ValidationLimits | None = None) -> str | None:
    """The canonical geometry fingerprint of a design file (for ApprovedBuildFile); None if not a mesh."""
    mesh = read_mesh_file(path, limits=limits)
    if mesh is None:
        return None
    canon = canonical_triangles(mesh.triangles)
    return fingerprint_canonical(canon)
