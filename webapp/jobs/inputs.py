"""Batch job input files, read into documents: CSV, JSON Lines, plain text and zip archives.

Pure functions (no Django): bytes and choices in, documents or a clear error out. A problem
with the whole file (wrong kind, a column that does not exist, too many documents, a zip
bomb) raises `InputError`; a problem with one document (not UTF-8, too long, not text) is
kept on that document as `error`, so the rest of the job goes ahead and nothing is lost.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import posixpath
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

BOM = "\ufeff"


class InputError(ValueError):
    """The file as a whole cannot be used; the message says why and what to do."""


class Format(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    TXT = "txt"
    ZIP = "zip"


class TextMode(StrEnum):
    LINES = "lines"  # one document per line
    WHOLE = "whole"  # the whole file is one document


EXTENSIONS: dict[str, Format] = {
    ".csv": Format.CSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".txt": Format.TXT,
    ".md": Format.TXT,
    ".zip": Format.ZIP,
}
ZIP_MEMBER_EXTENSIONS = (".txt", ".md")
ARCHIVE_EXTENSIONS = (".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar", ".zst")

# File signatures of common binary formats, to tell a mislabelled file from a text file.
MAGIC: list[tuple[bytes, str]] = [
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"),
    (b"SQLite format 3", "an SQLite database"),
]


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 50 * 1024 * 1024
    max_items: int = 10_000
    max_item_chars: int = 100_000
    zip_max_uncompressed_bytes: int = 200 * 1024 * 1024
    zip_max_ratio: int = 100  # uncompressed / compressed size of one member


@dataclass(frozen=True)
class Document:
    """One input of a job: its place, the id it had in the file, its text, or why it
    cannot be used (then `text` is empty and the item fails without reaching a model)."""

    index: int  # 0-based order in the file, empty rows not counted
    external_id: str
    text: str
    error: str = ""


@dataclass
class Parsed:
    format: Format
    documents: list[Document]
    skipped_empty: int = 0
    ignored: list[str] = field(default_factory=list)  # zip members that are not documents

    @property
    def invalid(self) -> int:
        return sum(1 for d in self.documents if d.error)


@dataclass(frozen=True)
class Inspection:
    """What the second step of the upload form offers: the format and, for CSV and
    JSON Lines, the columns or fields found."""

    format: Format
    columns: list[str]
    suggested: str = ""  # the column or field most likely to hold the text


def detect_format(filename: str) -> Format:
    name = filename.lower()
    for extension, kind in EXTENSIONS.items():
        if name.endswith(extension):
            return kind
    accepted = ", ".join(sorted(EXTENSIONS))
    raise InputError(f"{filename!r} is not a file type jobs accept ({accepted}).")


def inspect(filename: str, data: bytes, limits: Limits = Limits()) -> Inspection:
    """Check the file is what its name says and list the columns (CSV) or fields (JSONL)."""
    kind = _check_file(filename, data, limits)
    if kind == Format.CSV:
        reader, header = _csv_header(filename, _decode_file(filename, data))
        try:
            rows = list(itertools.islice(reader, 50))
        except csv.Error as exc:
            raise InputError(
                f"{filename!r} is not valid CSV near line {reader.line_num}: {exc}."
            ) from None
        samples = [dict(zip(header, row, strict=False)) for row in rows]
        return Inspection(kind, header, _suggest(header, samples))
    if kind == Format.JSONL:
        fields, samples = _jsonl_fields(filename, data)
        return Inspection(kind, fields, _suggest(fields, samples))
    if kind == Format.ZIP:
        _open_zip(filename, data)
    return Inspection(kind, [])


def _suggest(names: list[str], samples: list[dict[str, Any]]) -> str:
    """ "text" if there is such a column, else the one with the longest text values."""
    if "text" in names or not names:
        return "text" if names else ""

    def mean_length(name: str) -> float:
        values = [v for s in samples if isinstance(v := s.get(name), str)]
        return sum(len(v) for v in values) / len(values) if values else -1.0

    return max(names, key=mean_length)


def parse(
    filename: str,
    data: bytes,
    *,
    column: str = "",
    id_column: str = "",
    text_mode: TextMode | str = TextMode.LINES,
    limits: Limits = Limits(),
) -> Parsed:
    """The documents of a file, in order. `column` and `id_column` name the CSV column or
    the JSONL field holding the text and the optional id (JSONL's text field defaults to
    "text"; a CSV with one column, or one named "text", needs no choice). Without an id,
    a document's id is its line or row number, or its path inside a zip."""
    kind = _check_file(filename, data, limits)
    if kind == Format.CSV:
        parsed = _parse_csv(filename, data, column, id_column, limits)
    elif kind == Format.JSONL:
        parsed = _parse_jsonl(filename, data, column or "text", id_column, limits)
    elif kind == Format.TXT:
        parsed = _parse_txt(filename, data, TextMode(text_mode), limits)
    else:
        parsed = _parse_zip(filename, data, limits)
    if not parsed.documents:
        skipped = f" ({parsed.skipped_empty} empty skipped)" if parsed.skipped_empty else ""
        raise InputError(f"{filename!r} contains no documents{skipped}.")
    return parsed


# --- the file as a whole ------------------------------------------------------------------


def _check_file(filename: str, data: bytes, limits: Limits) -> Format:
    kind = detect_format(filename)
    if len(data) > limits.max_upload_bytes:
        raise InputError(
            f"{filename!r} is {_size(len(data))}; the largest file accepted is "
            f"{_size(limits.max_upload_bytes)}."
        )
    if not data.strip():
        raise InputError(f"{filename!r} is empty.")
    looks_like = _binary_kind(data)
    if kind == Format.ZIP:
        if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            what = looks_like or "not a ZIP archive"
            raise InputError(f"{filename!r} is named .zip but is {what}.")
    elif looks_like is not None:
        raise InputError(f"{filename!r} is named {_extension(filename)} but is {looks_like}.")
    elif b"\x00" in data[:8192]:
        raise InputError(
            f"{filename!r} is named {_extension(filename)} but is not a text file "
            "(it contains NUL bytes; UTF-16 is not accepted either: save it as UTF-8)."
        )
    return kind


def _binary_kind(data: bytes) -> str | None:
    for magic, what in MAGIC:
        if data.startswith(magic):
            return what
    return None


def _extension(filename: str) -> str:
    return posixpath.splitext(filename.lower())[1] or "(no extension)"


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _decode_file(filename: str, data: bytes) -> str:
    """A whole file as UTF-8 (a byte-order mark is dropped), or a clear error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{filename!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 and upload it again."
        ) from None
    return text.removeprefix(BOM)


def _decode_item(raw: bytes, where: str) -> tuple[str, str]:
    """(text, error) of one document's bytes: UTF-8, else a per-document error."""
    try:
        return raw.decode("utf-8").removeprefix(BOM), ""
    except UnicodeDecodeError as exc:
        return "", (
            f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start}); "
            "save the file as UTF-8."
        )


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a stray byte


def _has_undecodable(text: str) -> bool:
    """True if text decoded with surrogateescape held bytes that are not UTF-8."""
    return _UNDECODABLE.search(text) is not None


def _document(index: int, external_id: str, text: str, where: str, limits: Limits) -> Document:
    if len(text) > limits.max_item_chars:
        return Document(
            index,
            external_id,
            "",
            f"{where} is {len(text):,} characters long; the limit is {limits.max_item_chars:,}.",
        )
    return Document(index, external_id, text)


def _check_count(filename: str, count: int, limits: Limits) -> None:
    if count > limits.max_items:
        raise InputError(
            f"{filename!r} has more than {limits.max_items:,} documents, the most one job "
            "takes; split it into several files."
        )


def _available(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "none"


# --- CSV ----------------------------------------------------------------------------------


# The dialect is guessed from this many characters: csv.Sniffer's regular expressions take
# time that grows with the square of the sample (16 KB of `,"` took 2.7 s; this takes 0.2 s).
SNIFF_CHARS = 4096


def _csv_reader(text: str) -> Any:
    # The csv module refuses a field over 128 KiB (`field_size_limit`, one global value);
    # a field cannot be longer than the file, which is already in memory and within the
    # upload limit, and a document too long for a job becomes that document's own error.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    sample = text[:SNIFF_CHARS]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return csv.reader(io.StringIO(text, newline=""), dialect)


def _csv_header(filename: str, text: str) -> tuple[Any, list[str]]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        raise InputError(
            f"{filename!r} is named .csv but looks like JSON; name it .jsonl if it has one "
            "JSON object per line."
        )
    reader = _csv_reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{filename!r} has no header row.") from None
    except csv.Error as exc:
        raise InputError(f"{filename!r} is not valid CSV: {exc}.") from None
    header = [name.strip() for name in header]
    if not any(header):
        raise InputError(
            f"{filename!r} has an empty header row; the first row must name the columns."
        )
    return reader, header


def _parse_csv(filename: str, data: bytes, column: str, id_column: str, limits: Limits) -> Parsed:
    # Undecodable bytes are kept as surrogates so that only the rows holding them fail.
    text = data.decode("utf-8", errors="surrogateescape").removeprefix(BOM)
    reader, header = _csv_header(filename, text)
    if _has_undecodable("".join(header)):
        raise InputError(f"The header row of {filename!r} is not UTF-8; save the file as UTF-8.")
    if not column:
        if "text" in header:
            column = "text"
        elif len(header) == 1:
            column = header[0]
        else:
            raise InputError(
                f"Choose the column that holds the text; {filename!r} has {_available(header)}."
            )
    for name, what in ((column, "column"), (id_column, "id column")):
        if name and name not in header:
            raise InputError(
                f"{filename!r} has no {what} {name!r}; its columns are {_available(header)}."
            )
    at, id_at = header.index(column), (header.index(id_column) if id_column else None)
    parsed = Parsed(Format.CSV, [])
    try:
        for row in reader:
            line = reader.line_num
            value = row[at] if at < len(row) else ""
            if not value.strip():
                parsed.skipped_empty += 1
                continue
            _check_count(filename, len(parsed.documents) + 1, limits)
            index = len(parsed.documents)
            external = row[id_at].strip() if id_at is not None and id_at < len(row) else ""
            external = external if external and not _has_undecodable(external) else str(line)
            where = f"Row {line} (line {line} of the file)"
            if _has_undecodable(value):
                parsed.documents.append(
                    Document(
                        index, external, "", f"{where} is not UTF-8 text; save the file as UTF-8."
                    )
                )
            else:
                parsed.documents.append(_document(index, external, value, where, limits))
    except csv.Error as exc:
        raise InputError(
            f"{filename!r} is not valid CSV near line {reader.line_num}: {exc}."
        ) from None
    return parsed


# --- JSON Lines ---------------------------------------------------------------------------


def _jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each line; the newline ending the file starts no line."""
    data = data.removeprefix(BOM.encode())
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        yield number, raw.rstrip(b"\r")


def _jsonl_fields(filename: str, data: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    """Fields of the first objects (up to 50 lines), in the order first seen, and those
    objects."""
    fields: dict[str, None] = {}
    samples: list[dict[str, Any]] = []
    for number, raw in _jsonl_lines(data):
        if not raw.strip():
            continue
        value = _json_object(filename, raw, number, first=not samples)
        if isinstance(value, dict):
            fields.update(dict.fromkeys(value))
            samples.append(value)
        if len(samples) >= 50:
            break
    return list(fields), samples


def _json_object(filename: str, raw: bytes, number: int, *, first: bool) -> dict[str, Any] | str:
    """The object on a line, or a per-line error message. A first line that is not a JSON
    object means the file is not JSON Lines at all."""
    try:
        value = json.loads(raw.decode("utf-8").removeprefix(BOM))
    except RecursionError:  # nested deeper than Python's stack: no document is like that
        if first:
            raise InputError(
                f"{filename!r}: line {number} is JSON nested too deeply to read."
            ) from None
        return f"Line {number} is JSON nested too deeply to read."
    except UnicodeDecodeError:
        if first:
            raise InputError(f"{filename!r} is not UTF-8 text; save it as UTF-8.") from None
        return f"Line {number} is not UTF-8 text; save the file as UTF-8."
    except ValueError as exc:
        if first:
            raise InputError(
                f"{filename!r} is named .jsonl but line {number} is not JSON ({exc}); JSON "
                "Lines has one JSON object per line."
            ) from None
        return f"Line {number} is not valid JSON: {exc}."
    if not isinstance(value, dict):
        if first:
            raise InputError(
                f"{filename!r} is named .jsonl but line {number} is a JSON "
                f"{type(value).__name__}, not an object with fields."
            )
        return f"Line {number} is a JSON {type(value).__name__}, not an object."
    return value


def _parse_jsonl(
    filename: str, data: bytes, field_name: str, id_field: str, limits: Limits
) -> Parsed:
    parsed = Parsed(Format.JSONL, [])
    fields: dict[str, None] = {}
    found_field = found_id = False
    for number, raw in _jsonl_lines(data):
        if not raw.strip():
            parsed.skipped_empty += 1
            continue
        value = _json_object(filename, raw, number, first=not parsed.documents and not fields)
        if isinstance(value, dict):
            fields.update(dict.fromkeys(value))
            found_field |= field_name in value
            found_id |= bool(id_field) and id_field in value
            text = value.get(field_name)
            if field_name in value and (
                text is None or (isinstance(text, str) and not text.strip())
            ):
                parsed.skipped_empty += 1
                continue
        _check_count(filename, len(parsed.documents) + 1, limits)
        index = len(parsed.documents)
        external = str(number)
        if isinstance(value, str):
            parsed.documents.append(Document(index, external, "", value))
            continue
        raw_id = value.get(id_field) if id_field else None
        if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
            external = str(raw_id).strip()
        text = value.get(field_name)
        where = f"Line {number}"
        if text is None:
            parsed.documents.append(
                Document(index, external, "", f"{where} has no field {field_name!r}.")
            )
        elif not isinstance(text, str):
            parsed.documents.append(
                Document(
                    index,
                    external,
                    "",
                    f"{where}: field {field_name!r} is a JSON {type(text).__name__}, not text.",
                )
            )
        else:
            parsed.documents.append(_document(index, external, text, where, limits))
    for name, what, found in ((field_name, "field", found_field), (id_field, "id field", found_id)):
        if name and not found:
            raise InputError(
                f"{filename!r} has no {what} {name!r} on any line; its fields are "
                f"{_available(list(fields))}."
            )
    return parsed


# --- plain text ---------------------------------------------------------------------------


def _parse_txt(filename: str, data: bytes, mode: TextMode, limits: Limits) -> Parsed:
    parsed = Parsed(Format.TXT, [])
    if mode == TextMode.WHOLE:
        text = _decode_file(filename, data)
        if text.strip():
            parsed.documents.append(_document(0, filename, text, repr(filename), limits))
        return parsed
    for number, raw in _jsonl_lines(data):
        if not raw.strip():
            parsed.skipped_empty += 1
            continue
        _check_count(filename, len(parsed.documents) + 1, limits)
        index = len(parsed.documents)
        text, error = _decode_item(raw, f"Line {number}")
        if error:
            parsed.documents.append(Document(index, str(number), "", error))
        elif not text.strip():
            parsed.skipped_empty += 1
        else:
            parsed.documents.append(_document(index, str(number), text, f"Line {number}", limits))
    return parsed


# --- zip archives ---------------------------------------------------------------------------


def _open_zip(filename: str, data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InputError(f"{filename!r} is not a readable ZIP archive ({exc}).") from None


def _safe_member_name(name: str) -> bool:
    """False for names that try to leave the archive (absolute, drive letters, '..')."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _parse_zip(filename: str, data: bytes, limits: Limits) -> Parsed:
    archive = _open_zip(filename, data)
    parsed = Parsed(Format.ZIP, [])
    members: list[zipfile.ZipInfo] = []
    for info in archive.infolist():
        name = info.filename
        base = posixpath.basename(name.rstrip("/"))
        if info.is_dir() or name.startswith("__MACOSX/") or base.startswith("."):
            continue
        if name.lower().endswith(ARCHIVE_EXTENSIONS) or _member_is_archive(archive, info):
            raise InputError(
                f"{filename!r} contains another archive ({name!r}); archives inside archives "
                "are not accepted: unpack it and upload its files."
            )
        if not _safe_member_name(name) or _is_symlink(info):
            parsed.ignored.append(f"{name} (unsafe path or link)")
            continue
        if not name.lower().endswith(ZIP_MEMBER_EXTENSIONS):
            parsed.ignored.append(f"{name} (not .txt or .md)")
            continue
        members.append(info)
    total = sum(info.file_size for info in members)
    if total > limits.zip_max_uncompressed_bytes:
        raise InputError(
            f"{filename!r} unpacks to {_size(total)}; the limit is "
            f"{_size(limits.zip_max_uncompressed_bytes)}."
        )
    _check_count(filename, len(members), limits)
    unpacked = 0
    for info in sorted(members, key=lambda i: i.filename):
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > 1024 * 1024 and ratio > limits.zip_max_ratio:
            raise InputError(
                f"{filename!r} looks like a zip bomb: {info.filename!r} is compressed "
                f"{ratio:.0f} to 1 (the limit is {limits.zip_max_ratio} to 1)."
            )
        raw, error = _read_member(archive, info, limits)
        unpacked += len(raw)
        if unpacked > limits.zip_max_uncompressed_bytes:  # sizes in the headers lied
            raise InputError(
                f"{filename!r} unpacks to more than {_size(limits.zip_max_uncompressed_bytes)}, "
                "the limit."
            )
        index = len(parsed.documents)
        if error:
            parsed.documents.append(Document(index, info.filename, "", error))
            continue
        text, error = _decode_item(raw, info.filename)
        if error:
            parsed.documents.append(Document(index, info.filename, "", error))
        elif not text.strip():
            parsed.skipped_empty += 1
        else:
            parsed.documents.append(_document(index, info.filename, text, info.filename, limits))
    return parsed


def _member_is_archive(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """True if a member's content starts like an archive, whatever its name."""
    if info.flag_bits & 0x1 or info.file_size < 4:
        return False
    try:
        with archive.open(info) as member:
            head = member.read(8)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError):
        return False
    return head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!"))


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> tuple[bytes, str]:
    """A member's bytes, reading no more than its declared size allows (a header that lies
    about the size cannot make us unpack more), or a per-file error."""
    if info.flag_bits & 0x1:
        return b"", f"{info.filename} is encrypted; archives with passwords are not accepted."
    cap = min(info.file_size, limits.zip_max_uncompressed_bytes) + 1
    try:
        with archive.open(info) as member:
            raw = member.read(cap)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        return b"", f"{info.filename} could not be unpacked ({exc})."
    if len(raw) > info.file_size:
        return b"", f"{info.filename} is larger than its archive entry says; it was not read."
    return raw, ""
