"""Uploads are bounded and photos are what they claim (issue 16): a design file over the configured limit answers
413 and stores nothing; a photo whose bytes are not a JPEG, PNG or WebP (an HTML page sent as image/png), whose
declared type disagrees with its content, or whose header claims a decompression bomb answers 415."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from server.settings import Settings
from routekit import ROUTES_WITHOUT_CYCLES

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory) -> Settings:
    """Small limits, so the tests send kilobytes, not the deployed megabytes."""
    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), routes=ROUTES_WITHOUT_CYCLES,
                    max_design_file_bytes=256 * 1024, max_photo_bytes=64 * 1024)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, rows: bytes | None = None) -> bytes:
    """A PNG (grey, 8-bit); rows=b"" gives a header-only file claiming the size (a bomb's header)."""
    if rows is None:
        rows = b"".join(b"\x00" + bytes(width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def _report(plant, code: str, photo: bytes, declared: str):
    return plant.client.post("/api/v1/kiosk/nonconformities", headers=plant.h("operator"),
                             data={"code": code, "kind": "surface", "description": "spatter on the rim"},
                             files=[("photo", ("rim.png", photo, declared))])


@pytest.mark.parametrize("photo, declared, status, words", [
    (b"<html><script>alert(1)</script></html>", "image/png", 415, "is not a JPEG, PNG or WebP image"),
    (png(20, 10), "image/jpeg", 415, "was declared image/jpeg but its content is image/png"),
    (png(60_000, 60_000, rows=b""), "image/png", 415, "claims more pixels than any photo"),
    (png(8_000, 8_000, rows=b""), "image/png", 415, "8000 × 8000 pixels"),
    (png(20, 10)[:40], "image/png", 415, "is not a readable image/png image"),
    (png(20, 10) + b"\x00" * (70 * 1024), "image/png", 413, "the limit is 0.0625 MiB"),
])
def test_a_photo_must_be_the_image_it_claims_and_within_the_limit(plant, photo, declared, status, words):
    ctx = plant.ready()
    before = len(plant.call("GET", "/nonconformities", "quality_engineer"))
    r = _report(plant, ctx["job"]["devices"][0]["device_code"], photo, declared)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert len(plant.call("GET", "/nonconformities", "quality_engineer")) == before, "nothing recorded"


def test_a_real_photo_is_taken(plant):
    ctx = plant.ready()
    r = _report(plant, ctx["job"]["devices"][0]["device_code"], png(20, 10), "image/png")
    assert r.status_code == 201 and len(r.json()["photo_sha256"]) == 64


def test_a_manual_step_photo_is_checked_too(plant):
    ctx = plant.ready()
    plant.gate(ctx)
    r = plant.client.post(f"/api/v1/devices/{ctx['job']['devices'][0]['device_code']}/manual-steps",
                          headers=plant.h("operator"), json={
                              "kind": "support_removal", "description": "supports off", "password": PASSWORD,
                              "photos": [{"file_name": "page.png",
                                          "content_base64": base64.b64encode(b"<html></html>").decode()}]})
    assert r.status_code == 415 and "Photo page.png is not a JPEG, PNG or WebP image" in r.json()["detail"]


def test_a_design_file_over_the_limit_answers_413_and_stores_nothing(plant):
    ctx = plant.ready()
    r = plant.client.post(f"/api/v1/designs/{ctx['design']['id']}/iterations", headers=plant.h("design_engineer"),
                          data={"software_name": "Mimics", "software_version": "26", "change_note": "big"},
                          files=[("files", ("huge.stl", b"x" * (300 * 1024), "model/stl"))])
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"
    assert "larger than the limit of 0.25 MiB" in r.json()["detail"]
    design = plant.call("GET", f"/designs/{ctx['design']['id']}", "design_engineer")
    assert design["id"] == ctx["design"]["id"]
