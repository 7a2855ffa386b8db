"""Decoding untrusted image bytes: every check that can run before the pixels are decoded runs first.

Order: byte size, then the file signature against the allowed formats (only
that one Pillow plugin is ever tried), then width x height from the header,
then the file structure (``verify()``), then the frame count, and only then
are the pixels decoded. Limits are passed in, never set globally: Pillow's
``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` keep their
defaults, so nothing leaks between threads. Pillow's own bomb guard stays as a
backstop; ``IMAGE_MAX_PIXELS`` is capped below it so the worker's limit is the
one that applies. (Between Pillow's limit and twice it, ``Image.open`` also
emits a ``DecompressionBombWarning``; where warnings are errors, that becomes a
``decompression_bomb`` error too.)
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image

from .config import ImageLimits
from .convert import fit_short_side, to_working_mode
from .errors import ImageError, InvalidImage

STAGE = "decode"
DRAFT_GAP = 2  # JPEG decodes at >= 2x the resize target, as Image.thumbnail does: no visible loss
_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_TRANSPOSE = {  # what ImageOps.exif_transpose does, without rewriting metadata the worker never saves
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")

# Signatures of formats people send, so a refusal can say what the file is.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"8BPS", "PSD"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"qoif", "QOI"),
    (0, b"\x00\x00\x01\x00", "ICO"),
)
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


@dataclass(frozen=True)
class DecodedImage:
    """A validated image with its pixels loaded, upright (EXIF orientation applied), in a working mode."""

    image: Image.Image
    format: str  # "JPEG", "PNG", "WEBP" or "GIF" (a multi-picture JPEG counts as JPEG)
    full_size: tuple[int, int]  # upright size at full resolution; larger than image.size when decoded reduced


def sniff_format(data: bytes) -> str | None:
    """The image format the leading bytes announce, or ``None`` if they announce none known."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "ISO media (HEIC/AVIF/MP4)")
    for offset, signature, name in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    if data.lstrip()[:5].lower() in (b"<?xml", b"<svg "):
        return "SVG"
    return None


def decode_base64_image(text: object, *, max_bytes: int) -> bytes:
    """The bytes of a task's base64 ``image`` (standard alphabet; a ``data:image/...;base64,`` prefix is allowed)."""
    if not isinstance(text, str):
        raise InvalidImage("invalid_base64", f"image must be a base64 string, got {type(text).__name__}", stage=STAGE)
    if len(text) > 2 * max_bytes + 1024:  # cheap bound before copying anything
        raise too_large(len(text) * 3 // 4, max_bytes)
    match = _DATA_URL.match(text)
    compact = text[match.end() if match else 0 :].translate(_WHITESPACE)
    if len(compact) > (max_bytes + 2) // 3 * 4:
        raise too_large(len(compact) * 3 // 4, max_bytes)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidImage(
            "invalid_base64",
            f"image is not valid base64 ({e}); send the file's bytes base64-encoded with the standard alphabet",
            stage=STAGE,
        ) from e


def decode_image(data: bytes, limits: ImageLimits, *, shrink_to: int | None = None) -> DecodedImage:
    """Validate ``data`` and decode it; raises :class:`InvalidImage` saying what is wrong.

    ``shrink_to`` promises that the caller will resize the shorter side to that
    many pixels: a JPEG is then decoded at a reduced scale (1/2, 1/4 or 1/8, but
    at least twice the target), which needs a fraction of the memory and time.
    ``full_size`` still reports the full-resolution size.
    """
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits.max_bytes)
    fmt = sniff_format(data)
    allowed = _either(limits.formats)
    if fmt is None:
        raise InvalidImage(
            "corrupt", f"the data is not a recognisable image; send a {allowed} file (IMAGE_FORMATS)", stage=STAGE
        )
    if fmt not in limits.formats:
        raise InvalidImage(
            "unsupported_format",
            f"the image is {fmt}, which is not accepted; convert it to {allowed} (IMAGE_FORMATS)",
            stage=STAGE,
        )
    if fmt == "WEBP" and len(data) < int.from_bytes(data[4:8], "little") + 8:
        raise _truncated(fmt, f"{len(data)} of {int.from_bytes(data[4:8], 'little') + 8} bytes")
    try:
        return _decode(data, fmt, limits, shrink_to)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImage(
            "decompression_bomb",
            f"the image declares so many pixels that it was refused unread ({e}); "
            f"the limit is {limits.max_pixels} pixels (IMAGE_MAX_PIXELS): send a smaller image",
            stage=STAGE,
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # any other failure of a decoder on untrusted bytes means the data is bad
        if isinstance(e, EOFError) or "truncated" in str(e).lower():
            raise _truncated(fmt, str(e)) from e
        raise InvalidImage(
            "corrupt",
            f"the {fmt} data cannot be decoded ({type(e).__name__}: {str(e)[:200]}); "
            "re-export the image and send it again",
            stage=STAGE,
        ) from e


def _decode(data: bytes, fmt: str, limits: ImageLimits, shrink_to: int | None) -> DecodedImage:
    with Image.open(io.BytesIO(data), formats=[fmt]) as probe:
        check_pixels(probe.size, limits.max_pixels, stage=STAGE)
        probe.verify()  # structure and checksums (PNG CRCs) before any pixel is decoded
    with Image.open(io.BytesIO(data), formats=[fmt]) as image:
        # A multi-picture JPEG (MPO: phone portrait shots, 3D cameras) carries previews or depth maps
        # after the primary picture, not animation: it is decoded as the JPEG it starts with.
        if image.format != "MPO" and getattr(image, "is_animated", False):
            frames = getattr(image, "n_frames", "several")
            raise InvalidImage(
                "animated",
                f"the {fmt} image is animated ({frames} frames); only still images are edited: send a single frame",
                stage=STAGE,
            )
        full_size = image.size
        if shrink_to is not None and fmt == "JPEG":
            target = fit_short_side(image.size, shrink_to)
            if target != image.size:
                image.draft(None, (target[0] * DRAFT_GAP, target[1] * DRAFT_GAP))
        image.load()
        orientation = _orientation(image)
        if orientation in _SWAPS_SIDES:
            full_size = (full_size[1], full_size[0])
        upright: Image.Image = image
        if orientation in _TRANSPOSE:
            upright = image.transpose(_TRANSPOSE[orientation])
            for key in ("exif", "xmp", "XML:com.adobe.xmp"):  # they still say "rotate me": never apply it twice
                upright.info.pop(key, None)
        return DecodedImage(to_working_mode(upright), fmt, full_size)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 when absent or unreadable (as browsers do: the picture is fine)."""
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except MemoryError:
        raise
    except Exception:
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def check_pixels(size: tuple[int, int], max_pixels: int, *, stage: str) -> None:
    """Raise ``too_many_pixels`` when ``size`` exceeds ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise InvalidImage(
            "too_many_pixels",
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(IMAGE_MAX_PIXELS): send a smaller image",
            stage=stage,
        )


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def too_large(size: int, max_bytes: int) -> InvalidImage:
    """The ``too_large`` error for an input of ``size`` bytes."""
    return InvalidImage(
        "too_large",
        f"the image is about {size} bytes; the limit is {max_bytes} (IMAGE_MAX_BYTES): "
        "send a smaller or more compressed file",
        stage=STAGE,
    )


def _truncated(fmt: str, detail: str) -> InvalidImage:
    return InvalidImage(
        "truncated",
        f"the {fmt} data ends early ({detail[:200]}); the upload was probably cut off: send the complete file",
        stage=STAGE,
    )
