"""Files a generation works on (an image to classify), stored under UPLOADS_DIR where the
web process and the workers both read them. A generation's input names its file by a path
relative to that folder; the path is checked on the way back in, so a stored input can never
point a worker outside the folder."""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
from pathlib import Path

from django.conf import settings

from generation.images import MAX_PIXELS, image_size, sniff_format

log = logging.getLogger(__name__)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota used up, file too big
NO_ROOM_MESSAGE = (
    "the server has no room to store the file right now; nothing was saved: "
    "try again later, or tell an administrator"
)


def out_of_space(exc: BaseException) -> bool:
    """True when a write failed for want of disk space: a file's (ENOSPC and the like) or
    the database's (PostgreSQL's disk_full, SQLSTATE 53100; SQLite's SQLITE_FULL, 13)."""
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) == "53100" or (
        getattr(cause, "sqlite_errorcode", None) == 13
    )


class UploadError(ValueError):
    """The upload was refused; the message can be shown as it is."""


def _root() -> Path:
    return Path(settings.UPLOADS_DIR).resolve()


def save_image(user_id: int, data: bytes) -> str:
    """Store an image's bytes; returns the relative path to put in a generation's input.
    The format is read from the content (the file name is not trusted)."""
    if not data:
        raise UploadError("the file is empty")
    limit = settings.ATELIER_MAX_IMAGE_BYTES
    if len(data) > limit:
        raise UploadError(f"the image is larger than the limit of {limit // (1024 * 1024)} MiB")
    kind = sniff_format(data)
    if kind is None:
        raise UploadError(
            "the file is not an image in a supported format (JPEG, PNG, WebP, GIF or BMP)"
        )
    _check_header(data, kind)
    relative = Path(str(user_id)) / f"{secrets.token_hex(16)}.{kind.lower()}"
    _write(_root() / relative, data)
    return relative.as_posix()


def _check_header(data: bytes, kind: str) -> None:
    """Refuse what the header declares (not the pixels): a cut-short header, no pixels,
    or more pixels than a worker decodes (a decompression bomb)."""
    size = image_size(data)
    if size is None:
        raise UploadError(f"the file looks like {kind} but its header is damaged or cut short")
    width, height = size
    if width < 1 or height < 1:
        raise UploadError("the image has no pixels")
    if width * height > MAX_PIXELS:
        raise UploadError(
            f"the image is {width} x {height} pixels; at most "
            f"{MAX_PIXELS // 1_000_000} million pixels are accepted"
        )


def _write(path: Path, data: bytes) -> None:
    """Write the file whole or not at all: it appears under its name only once written, and
    a disk that fills up midway leaves nothing behind (files already stored are untouched)."""
    tmp = path.with_suffix(".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.rename(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.error("could not store an upload in %s: %s", path.parent, exc)
        if out_of_space(exc):
            raise UploadError(NO_ROOM_MESSAGE) from None
        raise UploadError("the server could not store the file; nothing was saved") from None


def resolve(relative: str) -> Path:
    """The file behind a stored relative path; refuses anything outside UPLOADS_DIR."""
    root = _root()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise UploadError("the uploaded file's path is not valid")
    return path


def read(relative: str) -> bytes:
    path = resolve(relative)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UploadError("the uploaded file is no longer there") from None


def delete(relative: str) -> None:
    with contextlib.suppress(UploadError):
        resolve(relative).unlink(missing_ok=True)
