"""An uploaded image's format, told from its first bytes (never from the file name),
against the allow-list of formats Atelier decodes. No Pillow or torch here: the web
process checks uploads with it; `generation.vision` decodes them on the worker."""

from __future__ import annotations

# Pillow's names for the formats we accept, and the magic bytes that announce each one.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),  # after "RIFF" and the chunk size
)
FORMAT_NAMES = "JPEG, PNG, WebP, GIF or BMP"


def sniff_format(data: bytes) -> str | None:
    """The allowed format the bytes start like, or None."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "WEBP" and data[:4] != b"RIFF":
                continue
            return name
    return None
