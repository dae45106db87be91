"""docs/benchmarks.md is written by the benchmarks, one '## ' section each: replace only your own."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(section: str, doc: Path = DOC) -> None:
    """Replace (or append) the section that starts with section's own '## Heading' line; leave the others."""
    heading, _, body = section.strip("\n").partition("\n")
    lines = doc.read_text().splitlines() if doc.exists() else ["# Benchmarks", "", "Each section is written by its benchmark."]
    start = next((i for i, line in enumerate(lines) if line.strip() == heading.strip()), None)
    new = [heading, *body.splitlines(), ""]
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        lines = lines[:start] + new + lines[end:]
    doc.write_text("\n".join(lines).rstrip() + "\n")
