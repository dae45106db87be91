"""STL reading (binary and ASCII) that refuses broken and hostile files before allocating for them.

Binary STL: an 80-byte header, a little-endian uint32 triangle count, then 50 bytes per triangle
(normal, three vertices as float32, a 2-byte attribute). The record layout is numpy-stl's own
(`stl.stl.BaseStl.dtype`); the body is mapped with numpy.frombuffer over the bytes already read, which
is zero-copy. numpy-stl's reader (`Mesh.from_file(..., calculate_normals=False)`) reads the same
layout but opens the file again and copies it (18 ms vs 0 ms for a 65 MB file here, and a second
read of a file the hash was not computed on); its ASCII reader runs a Python loop per line (about
14 s per million triangles here), so ASCII is parsed below with vectorised numpy instead.

ASCII STL is told from binary by content, not by the word "solid": many binary exporters start their
header with "solid". A file is ASCII when it starts with "solid" and its first 4 KiB hold no control
bytes (binary STL has NUL bytes at the latest in its first attribute field).
"""

from __future__ import annotations

import re

import numpy as np
from stl import stl as numpy_stl

from .errors import InvalidBuildFile
from .limits import ValidationLimits
from .meshfile import MeshFile, check_coordinates

BINARY_HEADER = 84
BINARY_RECORD = 50
RECORD_DTYPE = np.dtype(numpy_stl.BaseStl.dtype)  # normals (3 f4), vectors (3x3 f4), attr (u2)
assert RECORD_DTYPE.itemsize == BINARY_RECORD

SNIFF_BYTES = 4096
ASCII_WINDOW = 4 << 20  # bytes tokenised at once: bounds the token list to a few tens of MB

# One facet is exactly 21 whitespace-separated tokens; None marks a number.
_FACET = (
    [b"facet", b"normal", None, None, None, b"outer", b"loop"]
    + [b"vertex", None, None, None] * 3
    + [b"endloop", b"endfacet"]
)
_KEYWORD_COLS = [(i, t) for i, t in enumerate(_FACET) if t is not None]
_VERTEX_COLS = [8, 9, 10, 12, 13, 14, 16, 17, 18]
_CONTROL = bytes(range(0, 9)) + bytes(range(14, 32))
_FACET_WORD = re.compile(rb"\bfacet\b")
# Bytes that may appear in lower-cased STL facet text: whitespace, digits, signs, the letters of the
# keywords and of nan/inf. Anything else is garbage, found by one C-speed translate per window.
_ALLOWED = b" \t\r\n\f\v0123456789.+-" + bytes(sorted(set(b"facetnormalouterloopvertexendloopendfacetnaninfinity")))
_NOT_ALLOWED = re.compile(b"[^" + re.escape(_ALLOWED) + b"]")


def looks_like_ascii_stl(head: bytes) -> bool:
    """True when the first bytes read as ASCII STL: 'solid' first and no control bytes."""
    return head.lstrip()[:5].lower() == b"solid" and not any(b in _CONTROL for b in head[:SNIFF_BYTES])


def read_stl_bytes(data: bytes | memoryview, *, limits: ValidationLimits | None = None, where: str = "") -> MeshFile:
    """Parse STL bytes (binary or ASCII) into triangles in mm, or raise InvalidBuildFile."""
    limits = limits or ValidationLimits()
    data = memoryview(data).cast("B")
    head = bytes(data[:SNIFF_BYTES])
    if looks_like_ascii_stl(head):
        triangles, solids = _parse_ascii(data, limits, where)
        fmt = "stl-ascii"
    else:
        triangles = _parse_binary(data, limits, where, header_says_solid=head[:5].lower() == b"solid", head=head)
        solids, fmt = 1, "stl-binary"
    check_coordinates(triangles, limits, where)
    return MeshFile(triangles=triangles, format=fmt, unit="millimeter", unit_declared=False, parts=solids)


def _parse_binary(data: memoryview, limits: ValidationLimits, where: str, *, header_says_solid: bool, head: bytes) -> np.ndarray:
    size = len(data)
    if size < BINARY_HEADER:
        if head.strip() and not any(b in _CONTROL for b in head):
            raise InvalidBuildFile(
                f"not an STL file: {size} bytes of text that do not start with 'solid'", where, kind="not_stl"
            )
        raise InvalidBuildFile(
            f"truncated binary STL: {size} bytes, but the 80-byte header and 4-byte triangle count alone need 84",
            where,
            kind="truncated",
        )
    declared = int(np.frombuffer(data[80:84], dtype="<u4")[0])
    holds, extra = divmod(size - BINARY_HEADER, BINARY_RECORD)
    if (declared != holds or extra) and not header_says_solid and not any(b in _CONTROL for b in head):
        raise InvalidBuildFile(
            f"not an STL file: {size} bytes of text that do not start with 'solid'", where, kind="not_stl"
        )
    prefix = "binary STL whose header begins with 'solid' " if header_says_solid else "binary STL "
    if declared > limits.max_triangles:
        raise InvalidBuildFile(
            f"{prefix}declares {declared} triangles, above the limit of {limits.max_triangles} "
            f"(the file's {size} bytes hold {holds})",
            where,
            kind="too_many_triangles",
        )
    if declared != holds or extra:
        tail = f" and {extra} stray bytes" if extra else ""
        raise InvalidBuildFile(
            f"{prefix}declares {declared} triangles but the file holds {holds}{tail} (size {size} bytes; "
            f"{declared} triangles need {BINARY_HEADER + BINARY_RECORD * declared} bytes)",
            where,
            kind="stl_count_mismatch",
        )
    if declared == 0:
        raise InvalidBuildFile("binary STL holds no triangles (empty mesh)", where, kind="empty")
    records = np.frombuffer(data, dtype=RECORD_DTYPE, count=declared, offset=BINARY_HEADER)
    return records["vectors"]  # (n, 3, 3) float32 view, no copy


def _parse_ascii(data: memoryview, limits: ValidationLimits, where: str) -> tuple[np.ndarray, int]:
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    size = len(raw)
    blocks: list[np.ndarray] = []
    count = 0
    solids = 0
    pos = _skip_ws(raw, 0)
    while True:
        # pos is at a "solid" line
        if raw[pos : pos + 5].lower() != b"solid":
            raise InvalidBuildFile(
                f"ASCII STL: expected 'solid' but found {_snippet(raw, pos)} at line {_line(raw, pos)}",
                where,
                kind="ascii_syntax",
            )
        eol = raw.find(b"\n", pos)
        pos = size if eol < 0 else eol + 1
        while True:
            pos = _skip_ws(raw, pos)
            if pos >= size:
                raise InvalidBuildFile(
                    f"ASCII STL ends after {count} facets without 'endsolid': the file is truncated",
                    where,
                    kind="truncated",
                )
            if raw[pos : pos + 8].lower() == b"endsolid":
                eol = raw.find(b"\n", pos)
                pos = size if eol < 0 else eol + 1
                solids += 1
                break
            window_end = min(size, pos + ASCII_WINDOW)
            window = raw[pos:window_end].lower()
            stop = window.find(b"endsolid")
            if stop >= 0:
                window = window[:stop]
            else:
                last = window.rfind(b"endfacet")
                if last < 0:
                    if window_end >= size:
                        cut = len(window)  # a trailing partial facet: let the token check name it
                    else:
                        raise InvalidBuildFile(
                            f"ASCII STL: no 'endfacet' within {ASCII_WINDOW} bytes after line {_line(raw, pos)}",
                            where,
                            kind="ascii_syntax",
                        )
                else:
                    cut = last + 8
                window = window[:cut]
            block = _parse_facets(window, raw, pos, limits, where, first_facet=count)
            count += block.shape[0]
            if count > limits.max_triangles:
                raise InvalidBuildFile(
                    f"ASCII STL holds more than {limits.max_triangles} triangles (the limit)",
                    where,
                    kind="too_many_triangles",
                )
            blocks.append(block)
            pos += len(window)
        pos = _skip_ws(raw, pos)
        if pos >= size:
            break
    if count == 0:
        raise InvalidBuildFile("ASCII STL holds no triangles (empty mesh)", where, kind="empty")
    return (np.concatenate(blocks) if len(blocks) > 1 else blocks[0]), solids


def _parse_facets(window: bytes, raw: bytes, offset: int, limits: ValidationLimits, where: str, *, first_facet: int) -> np.ndarray:
    """Parse whole facets in window (lower-cased) into (k, 3, 3) float32, checking every keyword."""
    garbage = window.translate(None, _ALLOWED)
    if garbage:
        at = _NOT_ALLOWED.search(window).start()
        raise InvalidBuildFile(
            f"ASCII STL: unexpected byte {window[at:at + 1]!r} at line {_line(raw, offset + at)}; "
            "STL text holds only keywords and numbers",
            where,
            kind="ascii_syntax",
        )
    tokens = window.split()
    if not tokens:
        return np.empty((0, 3, 3), np.float32)
    whole, rest = divmod(len(tokens), 21)
    # Column c of the facet table is tokens[c::21]; comparing whole columns keeps this in C.
    for col, word in _KEYWORD_COLS:
        column = tokens[col::21]
        if column.count(word) != len(column):
            k = next(i for i, t in enumerate(column) if t != word)
            raise InvalidBuildFile(
                f"ASCII STL: expected '{word.decode()}' but found '{column[k].decode('ascii', 'replace')}' in facet "
                f"{first_facet + k + 1} (from line {_facet_line(window, raw, offset, k)})",
                where,
                kind="ascii_syntax",
            )
    if rest:
        raise InvalidBuildFile(
            f"ASCII STL: facet {first_facet + whole + 1} is incomplete, it ends after "
            f"'{tokens[-1].decode('ascii', 'replace')}' (line {_line(raw, offset + len(window))}): the file is truncated",
            where,
            kind="truncated",
        )
    values = np.empty((whole, 9), np.float64)
    for j, col in enumerate(_VERTEX_COLS):
        column = tokens[col::21]
        try:
            values[:, j] = np.array(column, dtype=np.float64)
        except ValueError:
            for k, token in enumerate(column):
                try:
                    float(token)
                except ValueError:
                    raise InvalidBuildFile(
                        f"ASCII STL: '{token.decode('ascii', 'replace')}' is not a number, in facet "
                        f"{first_facet + k + 1} (from line {_facet_line(window, raw, offset, k)})",
                        where,
                        kind="ascii_syntax",
                    ) from None
            raise
    # Decimal text is rounded to float32, the precision binary STL stores, so that the same
    # triangles give the same fingerprint from either container (see fingerprint.py).
    return values.astype(np.float32).reshape(-1, 3, 3)


def _skip_ws(raw: bytes, pos: int) -> int:
    size = len(raw)
    while pos < size and raw[pos] in b" \t\r\n\f\v":
        pos += 1
    return pos


def _line(raw: bytes, pos: int) -> int:
    return raw.count(b"\n", 0, pos) + 1


def _facet_line(window: bytes, raw: bytes, offset: int, k: int) -> int:
    for i, match in enumerate(_FACET_WORD.finditer(window)):
        if i == k:
            return _line(raw, offset + match.start())
    return _line(raw, offset + len(window))


def _snippet(raw: bytes, pos: int) -> str:
    text = raw[pos : pos + 20].decode("ascii", "replace")
    return repr(text) if text else "the end of the file"
