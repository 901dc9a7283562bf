"""Text from an uploaded document (.txt, .md or .pdf), with clear errors for files that are
too large, of another type, or not what their name says. Pure functions: no Django."""

from __future__ import annotations

import io
from pathlib import PurePath

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
PDF_SUFFIX = ".pdf"
ACCEPTED = ".txt, .md or .pdf"


class DocumentError(ValueError):
    """The file was refused; the message can be shown as it is."""


def read_document(name: str, data: bytes, *, max_bytes: int, max_chars: int) -> str:
    """The text of the file, stripped; DocumentError when it cannot be used."""
    suffix = PurePath(name).suffix.lower()
    if suffix not in (*TEXT_SUFFIXES, PDF_SUFFIX):
        raise DocumentError(f"“{name}” is not a {ACCEPTED} file")
    if len(data) > max_bytes:
        raise DocumentError(
            f"“{name}” is larger than the limit of {_size(max_bytes)} for a document"
        )
    text = _pdf_text(name, data, max_chars) if suffix == PDF_SUFFIX else _decode(name, data)
    text = text.strip()
    if not text:
        raise DocumentError(f"“{name}” has no text")
    if len(text) > max_chars:
        raise DocumentError(
            f"“{name}” has {len(text):,} characters of text, more than the limit of "
            f"{max_chars:,}; summarize it in parts or use a batch job"
        )
    return text


def _decode(name: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    elif b"\x00" not in data[:8192]:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DocumentError(
                f"“{name}” is not UTF-8 text; save it as UTF-8 and upload it again"
            ) from None
    raise DocumentError(f"“{name}” is not a text file (it holds binary data)")


def _pdf_text(name: str, data: bytes, max_chars: int) -> str:
    if not data.startswith(b"%PDF-"):
        raise DocumentError(f"“{name}” is not a PDF file (its content is not PDF)")
    import pypdf
    from pypdf.errors import LimitReachedError

    pages: list[str] = []
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(f"“{name}” is encrypted; upload a PDF without a password")
        length = 0
        for page in reader.pages:
            pages.append((page.extract_text() or "").strip())
            length += len(pages[-1])
            if length > max_chars:  # too long already: the caller says so; stop reading
                break
    except DocumentError:
        raise
    except LimitReachedError:  # pypdf's own caps on what a file may unpack to
        raise DocumentError(
            f"“{name}” holds more than Atelier unpacks from a PDF (a PDF bomb?); it was not read"
        ) from None
    except RecursionError:
        raise DocumentError(f"“{name}” is nested too deeply to be read as a PDF") from None
    except Exception as exc:  # pypdf raises many kinds on damaged files
        raise DocumentError(f"“{name}” could not be read as a PDF: {exc}") from None
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise DocumentError(f"“{name}” has no text layer (a scanned PDF?); paste its text instead")
    return text


def _size(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"{limit / (1024 * 1024):.3g} MiB"
    if limit >= 1024:
        return f"{limit / 1024:.3g} KiB"
    return f"{limit} bytes"
