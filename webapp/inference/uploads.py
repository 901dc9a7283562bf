"""Files a generation works on (an image to classify), stored under UPLOADS_DIR where the
web process and the workers both read them. A generation's input names its file by a path
relative to that folder; the path is checked on the way back in, so a stored input can never
point a worker outside the folder."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from django.conf import settings

from generation.images import sniff_format


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
    relative = Path(str(user_id)) / f"{secrets.token_hex(16)}.{kind.lower()}"
    path = _root() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.rename(path)
    return relative.as_posix()


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
