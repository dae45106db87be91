"""Photos people attach (nonconformities, manual steps) are checked for what they are, not for what the client
says (issue 16: an HTML file sent as image/png was accepted): the bytes must start like a JPEG, PNG or WebP, agree
with the declared type, and Pillow must read the image's structure within a pixel bound (a decompression bomb is
refused unread)."""

from __future__ import annotations

import io
import warnings

from PIL import Image

from server.errors import TooLarge, UnsupportedMediaType

TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
MAX_PIXELS = 50_000_000  # a 50-megapixel photo; more is a bomb or not a photo of a part


def sniff(content: bytes) -> str | None:
    """The image type the bytes say, from their first bytes; None when they are none of ours."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_photo(content: bytes, *, declared: str | None, max_bytes: int, what: str = "The photo") -> str:
    """The photo's type when the bytes are a readable JPEG, PNG or WebP of at most max_bytes (and the declared
    type, if any, agrees); else 413 or 415 saying why."""
    if len(content) > max_bytes:
        raise TooLarge(f"{what} is {len(content) / 1024 / 1024:.1f} MiB; the limit is {max_bytes / 1024 / 1024:g} MiB",
                       code="photo_size")
    kind = sniff(content)
    if kind is None:
        raise UnsupportedMediaType(f"{what} is not a JPEG, PNG or WebP image (its content says otherwise, whatever "
                                   f"its name or declared type)", code="photo_type")
    if declared is not None and declared != kind:
        raise UnsupportedMediaType(f"{what} was declared {declared} but its content is {kind}", code="photo_type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UnsupportedMediaType(f"{what} has {img.width} × {img.height} pixels; the limit is "
                                               f"{MAX_PIXELS // 1_000_000} megapixels", code="photo_type")
                img.verify()
    except UnsupportedMediaType:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedMediaType(f"{what} claims more pixels than any photo (limit {MAX_PIXELS // 1_000_000} "
                                   f"megapixels): refused unread", code="photo_type") from None
    except Exception as e:  # noqa: BLE001 - whatever Pillow finds wrong, the file is not a usable photo
        raise UnsupportedMediaType(f"{what} is not a readable {kind} image ({type(e).__name__})",
                                   code="photo_type") from None
    return kind
