"""Files under ``MEDIA_ROOT``: results written atomically, inputs read without leaving the root.

Results go to ``MEDIA_ROOT/image_editor/<uuid4 hex>.jpg|.png``: the name never
comes from input, the bytes are written to a temporary file in the same
directory, fsynced, made world-readable (0644, for a web server under another
user) and renamed into place, so a reader never sees half a file. A crash can
leave a ``.<random>.tmp`` file behind, never a partial result.

Inputs are paths relative to ``MEDIA_ROOT``. Absolute paths and ``..`` are
refused before the filesystem is touched; the path is then resolved with every
symlink followed and must still lie inside the resolved root; the final
component is opened with ``O_NOFOLLOW`` (a symlink swapped in after the check
is refused) and must be a regular file, read up to the byte limit.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from PIL import Image

from .convert import EXTENSIONS
from .decode import too_large
from .errors import InvalidImage, StageFailed

RESULT_DIR = "image_editor"
FILE_MODE = 0o644
READ_CHUNK = 1 << 20
PNG_COMPRESS_LEVEL = 6


@dataclass(frozen=True)
class SavedImage:
    """A result written under ``MEDIA_ROOT``."""

    path: str  # relative to MEDIA_ROOT, "/"-separated: image_editor/<32 hex>.jpg
    image_b64: str  # base64 of exactly the bytes in the file
    size_bytes: int


def encode_image(image: Image.Image, output_format: str, *, jpeg_quality: int) -> bytes:
    """The image encoded as ``output_format`` ("JPEG" or "PNG").

    Only the ICC profile is kept: EXIF (GPS position, camera serial), XMP and
    comments are dropped, and the EXIF orientation was already applied.
    """
    buffer = io.BytesIO()
    icc_profile = image.info.get("icc_profile") or None
    try:
        if output_format == "JPEG":
            image.save(buffer, "JPEG", quality=jpeg_quality, optimize=True, icc_profile=icc_profile, comment=b"")
        else:
            image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL, icc_profile=icc_profile)
    except MemoryError:
        raise
    except Exception as e:
        raise StageFailed(
            "encode_failed",
            f"the {image.width}x{image.height} {image.mode} result cannot be encoded as {output_format} "
            f"({type(e).__name__}: {e})",
            stage="save",
        ) from e
    return buffer.getvalue()


def save_result(data: bytes, output_format: str, media_root: Path) -> SavedImage:
    """Write encoded ``data`` atomically under ``MEDIA_ROOT/image_editor/`` with a fresh unique name."""
    directory = Path(media_root) / RESULT_DIR
    name = uuid.uuid4().hex + EXTENSIONS[output_format]
    temporary: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), FILE_MODE)
        os.replace(temporary, directory / name)
        temporary = None
        _fsync_directory(directory)
    except OSError as e:
        raise StageFailed(
            "save_failed",
            f"the result could not be written under MEDIA_ROOT/{RESULT_DIR}/ ({e.strerror or e}); "
            "check that MEDIA_ROOT exists, is writable and has free space",
            stage="save",
        ) from e
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return SavedImage(f"{RESULT_DIR}/{name}", base64.b64encode(data).decode("ascii"), len(data))


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve_media_path(media_root: Path, relative: str | PurePath, *, stage: str = "decode") -> Path:
    """The real path of ``relative`` (a path under ``MEDIA_ROOT``), which must exist inside the root.

    Raises ``path_outside_media_root`` for absolute paths, ``..``, NUL bytes and
    symlinks leading out of the root; ``not_found`` when nothing is there.
    """
    text = relative if isinstance(relative, str) else str(relative)
    if not isinstance(relative, (str, PurePath)) or not text or "\x00" in text:
        raise _outside(repr(relative), "it is not a non-empty path string", stage)
    pure = PurePosixPath(text)
    if pure.is_absolute():
        raise _outside(text, "it is absolute; give a path relative to MEDIA_ROOT, e.g. uploads/cat.jpg", stage)
    if ".." in pure.parts:
        raise _outside(text, "it contains '..'; give a path relative to MEDIA_ROOT without '..'", stage)
    try:
        root = Path(media_root).resolve(strict=True)
    except OSError as e:
        raise InvalidImage("not_found", f"MEDIA_ROOT does not exist ({e.strerror or e})", stage=stage) from e
    try:
        resolved = root.joinpath(*pure.parts).resolve(strict=True)
    except FileNotFoundError as e:
        raise InvalidImage("not_found", f"no file at {text!r} under MEDIA_ROOT", stage=stage) from e
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise InvalidImage("not_found", f"{text!r} under MEDIA_ROOT cannot be resolved ({e})", stage=stage) from e
    if not resolved.is_relative_to(root):
        raise _outside(text, "a symlink leads out of MEDIA_ROOT", stage)
    return resolved


def read_media_file(media_root: Path, relative: str | PurePath, *, max_bytes: int, stage: str = "decode") -> bytes:
    """The bytes of the regular file at ``relative`` under ``MEDIA_ROOT``, at most ``max_bytes``."""
    path = resolve_media_path(media_root, relative, stage=stage)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO planted there must not hang the worker
    except OSError as e:
        raise InvalidImage(
            "not_found", f"{relative!s} under MEDIA_ROOT cannot be opened ({e.strerror})", stage=stage
        ) from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidImage("not_found", f"{relative!s} under MEDIA_ROOT is not a regular file", stage=stage)
        if info.st_size > max_bytes:
            raise too_large(info.st_size, max_bytes)
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(READ_CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # the file grew after fstat
                raise too_large(total, max_bytes)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _outside(shown: str, why: str, stage: str) -> InvalidImage:
    return InvalidImage("path_outside_media_root", f"image_path {shown[:200]!r} is refused: {why}", stage=stage)
