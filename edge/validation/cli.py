"""The `verify` subcommand of amtrace-edge (and of `python -m edge.validation`).

Exit codes: 0 identical; 1 geometry equal but bytes differ (the output says whether the
product's policy allows building it); 2 different; 3 invalid or hostile build file; 4 usage error
(bad arguments, unreadable --design); 5 identical or geometry-equal but an integrity check failed
(e.g. the part does not fit the build volume), so the build must not start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from .errors import InvalidBuildFile
from .hashing import is_sha256_hex
from .verify import EXIT_USAGE, VerificationResult, verify_build_file

PROGRESS_MIN_BYTES = 32 << 20  # below this a check finishes before a person would read a progress line

VERDICT_TEXT = {
    "identical": "IDENTICAL: the build file is byte-identical to the approved file",
    "geometry_equal": "GEOMETRY EQUAL: different bytes, same geometry as the approved design",
    "different": "DIFFERENT: the build file does not match the approved design",
    "invalid": "INVALID: the build file is refused",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `verify` subcommand to an amtrace-edge argument parser."""
    parser = subparsers.add_parser(
        "verify",
        help="check a build file against its approved design",
        description="Check that a build file is the approved design: byte identity, geometry, mesh integrity.",
        epilog="exit codes: 0 identical, 1 geometry equal (bytes differ), 2 different, 3 invalid file, "
        "4 usage error, 5 matches but an integrity check failed",
    )
    parser.add_argument("build_file", metavar="BUILD_FILE", help="the file the machine would receive")
    ref = parser.add_mutually_exclusive_group(required=True)
    ref.add_argument("--design", metavar="FILE", help="the approved design file (STL or 3MF)")
    ref.add_argument("--sha256", metavar="HEX", help="the approved file's SHA-256 (64 hex digits)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--build-volume",
        metavar="X,Y,Z",
        help="the machine's build volume in mm, e.g. 250,250,300 (from the machine config)",
    )
    parser.add_argument(
        "--allow-geometry-equal",
        action="store_true",
        help="the product's policy lets a file with equal geometry but different bytes build",
    )
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    parser.set_defaults(func=run_verify)
    return parser


def run_verify(args: argparse.Namespace) -> int:
    """Run `verify` for parsed arguments; returns the process exit code."""
    if args.sha256 is not None and not is_sha256_hex(args.sha256):
        print(f"amtrace-edge verify: --sha256 must be 64 hex digits, got {args.sha256!r}", file=sys.stderr)
        return EXIT_USAGE
    build_volume = None
    if args.build_volume:
        try:
            build_volume = tuple(float(v) for v in args.build_volume.split(","))
            if len(build_volume) != 3 or min(build_volume) <= 0:
                raise ValueError
        except ValueError:
            print(f"amtrace-edge verify: --build-volume must be three positive numbers X,Y,Z, got {args.build_volume!r}", file=sys.stderr)
            return EXIT_USAGE
    if args.design is not None and not Path(args.design).is_file():
        print(f"amtrace-edge verify: design file {args.design} does not exist", file=sys.stderr)
        return EXIT_USAGE
    reporter = _progress_reporter(Path(args.build_file), sys.stderr, force=args.progress)
    try:
        result = verify_build_file(
            args.build_file,
            approved_sha256=args.sha256,
            design_path=args.design,
            build_volume_mm=build_volume,
            allow_geometry_equal=args.allow_geometry_equal,
            progress=reporter,
        )
    except InvalidBuildFile as exc:
        _end_progress(reporter)
        print(f"amtrace-edge verify: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    _end_progress(reporter)
    if args.json:
        print(json.dumps({**result.model_dump(mode="json"), "exit_code": result.exit_code}, indent=2, ensure_ascii=False))
    else:
        print(render(result))
    return result.exit_code


def render(result: VerificationResult) -> str:
    """The human-readable report: verdict, each check with its value, and the difference report."""
    lines = [VERDICT_TEXT[result.verdict], f"  file      {result.file} ({result.size_bytes} bytes, {result.format or 'not a mesh'})"]
    lines.append(f"  sha256    {result.sha256 or '-'}")
    lines.append(f"  approved  {result.approved_sha256 or '-'}")
    if result.geometry_fingerprint:
        lines.append(f"  geometry  {result.geometry_fingerprint}")
        lines.append(f"  approved  {result.approved_geometry_fingerprint or '-'}")
    lines.append(f"  build     {'ALLOWED' if result.allowed_to_build else 'NOT ALLOWED'}")
    for reason in result.reasons:
        lines.append(f"    - {reason}")
    if result.checks:
        lines.append("checks:")
        for check in result.checks:
            lines.append(f"  [{'pass' if check.passed else 'FAIL'}] {check.name:<17} {_value(check.value):<28} {check.reason}")
    if result.diff is not None:
        d = result.diff
        lines.append("difference report:")
        lines.append(f"  {d.summary}")
        lines.append(f"  {'':<22}{'approved':>28}{'received':>28}")
        lines.append(f"  {'triangles':<22}{d.approved.triangles:>28}{d.received.triangles:>28}")
        lines.append(f"  {'volume (mm³)':<22}{d.approved.volume_mm3:>28.3f}{d.received.volume_mm3:>28.3f}")
        lines.append(f"  {'surface area (mm²)':<22}{d.approved.area_mm2:>28.3f}{d.received.area_mm2:>28.3f}")
        lines.append(f"  {'bbox min (mm)':<22}{_xyz(d.approved.bbox_min_mm):>28}{_xyz(d.received.bbox_min_mm):>28}")
        lines.append(f"  {'bbox max (mm)':<22}{_xyz(d.approved.bbox_max_mm):>28}{_xyz(d.received.bbox_max_mm):>28}")
        for label, dev in (("received → approved", d.received_to_approved), ("approved → received", d.approved_to_received)):
            where = f" at ({_xyz(dev.location_mm)}) mm, {dev.side}" if dev.location_mm else ""
            lines.append(f"  {label}: max {dev.max_mm:.4f} mm{where}; mean {dev.mean_mm:.5f} mm over {dev.points_total} points")
        lines.append(f"  method: {d.method}")
    if result.timings_s:
        lines.append("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings_s.items()))
    return "\n".join(lines)


def _value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " × ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _xyz(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


class _ProgressLine:
    """A single self-overwriting progress line on stderr."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False
        self.started = time.monotonic()

    def __call__(self, stage: str, done: int | None, total: int | None) -> None:
        text = f"verify: {stage}"
        if done is not None and total:
            text += f" {100 * done // total:3d} % ({done >> 20} of {total >> 20} MiB)"
        self.stream.write(f"\r{text:<60} {time.monotonic() - self.started:6.1f} s")
        self.stream.flush()
        self.shown = True


def _progress_reporter(path: Path, stream: TextIO, *, force: bool) -> _ProgressLine | None:
    try:
        large = path.stat().st_size >= PROGRESS_MIN_BYTES
    except OSError:
        large = False
    if force or (large and stream.isatty()):
        return _ProgressLine(stream)
    return None


def _end_progress(reporter: _ProgressLine | None) -> None:
    if reporter is not None and reporter.shown:
        reporter.stream.write("\n")
        reporter.stream.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.validation`: the verify command on its own."""
    parser = argparse.ArgumentParser(prog="python -m edge.validation", description="amtrace build-file validation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage; this tool's usage code is 4
        return EXIT_USAGE if exc.code else 0
    return args.func(args)
