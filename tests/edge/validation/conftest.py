"""Fixtures of the validation tests; the mesh and build-file writers live in meshfiles.py (imported by name)."""

from __future__ import annotations

import pytest
import trimesh

from meshfiles import part_mesh


@pytest.fixture
def part() -> trimesh.Trimesh:
    """The standard test part (icosphere r=10 mm, 1280 triangles)."""
    return part_mesh()
