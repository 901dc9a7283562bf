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


# The most pixels an image may have; generation.vision.ImageLimits.max_pixels has the same
# default. Kept below Pillow's own bomb threshold (Image.MAX_IMAGE_PIXELS, ~89 M).
MAX_PIXELS = 40_000_000

_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0 to SOF15
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the image's header declares them, read without decoding (so a
    hostile header that claims billions of pixels is caught before Pillow sees it); None
    when the header is not there or is cut short."""
    kind = sniff_format(data)
    if kind == "PNG":
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return _be(data, 16, 4), _be(data, 20, 4)
    if kind == "GIF":
        return (_le(data, 6, 2), _le(data, 8, 2)) if len(data) >= 10 else None
    if kind == "BMP":
        return _bmp_size(data)
    if kind == "WEBP":
        return _webp_size(data)
    if kind == "JPEG":
        return _jpeg_size(data)
    return None


def _be(data: bytes, at: int, length: int) -> int:
    return int.from_bytes(data[at : at + length], "big")


def _le(data: bytes, at: int, length: int) -> int:
    return int.from_bytes(data[at : at + length], "little")


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if _le(data, 14, 4) == 12:  # the old OS/2 header: 16-bit sizes
        return _le(data, 18, 2), _le(data, 20, 2)
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    return None


# Real files have a few dozen segments before the frame header; a file of nothing but
# markers must not keep the web process walking 20 MB two bytes at a time.
_JPEG_MAX_STEPS = 10_000


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first frame header (SOFn), walking the segments from the start."""
    at = 2
    for _ in range(_JPEG_MAX_STEPS):
        if at + 4 > len(data):
            return None
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker in _JPEG_FRAME_MARKERS:
            if at + 9 > len(data):
                return None
            return _be(data, at + 7, 2), _be(data, at + 5, 2)
        at += 2 + _be(data, at + 2, 2)
    return None
