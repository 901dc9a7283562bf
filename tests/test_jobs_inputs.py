"""Reading batch job files: each format, every limit, and every kind of bad input. Pure
functions on bytes: no database."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest

from webapp.jobs.inputs import (
    Document,
    Format,
    InputError,
    Limits,
    TextMode,
    detect_format,
    inspect,
    parse,
)


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def texts(documents: list[Document]) -> list[str]:
    return [d.text for d in documents]


# --- formats --------------------------------------------------------------------------------


def test_format_is_chosen_by_extension_and_unknown_ones_are_named() -> None:
    assert detect_format("Docs.CSV") == Format.CSV
    assert detect_format("a.ndjson") == Format.JSONL
    assert detect_format("notes.md") == Format.TXT
    with pytest.raises(InputError, match=r"'report\.pdf' is not a file type.*\.csv"):
        detect_format("report.pdf")


def test_csv_with_chosen_column_and_id_column_keeps_order_and_ids() -> None:
    data = b'id,title,body\n7,First,"Hello, world"\n3,Second,"Line one\nline two"\n'
    parsed = parse("docs.csv", data, column="body", id_column="id")
    assert parsed.format == Format.CSV
    assert [(d.index, d.external_id, d.text) for d in parsed.documents] == [
        (0, "7", "Hello, world"),
        (1, "3", "Line one\nline two"),
    ]
    assert inspect("docs.csv", data).columns == ["id", "title", "body"]


def test_csv_needs_no_choice_with_a_text_column_or_a_single_column() -> None:
    assert texts(parse("a.csv", b"id,text\n1,alpha\n").documents) == ["alpha"]
    only = parse("b.csv", b"content\nalpha\nbeta\n")
    assert texts(only.documents) == ["alpha", "beta"]
    assert [d.external_id for d in only.documents] == ["2", "3"]  # row numbers of the file


def test_csv_with_semicolons_and_a_byte_order_mark() -> None:
    data = "\ufeffid;text\n1;Bonjour, le monde\n".encode()
    parsed = parse("excel.csv", data, column="text", id_column="id")
    assert [(d.external_id, d.text) for d in parsed.documents] == [("1", "Bonjour, le monde")]


def test_csv_column_that_does_not_exist_names_the_available_ones() -> None:
    data = b"id,title,body\n1,a,b\n"
    with pytest.raises(InputError, match=r"no column 'text'.*'id', 'title', 'body'"):
        parse("docs.csv", data, column="text")
    with pytest.raises(InputError, match=r"no id column 'key'.*'id', 'title', 'body'"):
        parse("docs.csv", data, column="body", id_column="key")
    with pytest.raises(InputError, match=r"Choose the column.*'id', 'title', 'body'"):
        parse("docs.csv", data)


def test_csv_empty_rows_are_skipped_and_counted() -> None:
    data = b"id,text\n1,alpha\n2,\n3,   \n\n4,beta\n"
    parsed = parse("docs.csv", data, column="text", id_column="id")
    assert [(d.index, d.external_id, d.text) for d in parsed.documents] == [
        (0, "1", "alpha"),
        (1, "4", "beta"),
    ]
    assert parsed.skipped_empty == 3  # two empty values and a blank line


def test_csv_row_that_is_not_utf8_fails_alone() -> None:
    data = "id,text\n1,café\n".encode() + b"2,caf\xe9 latin-1\n" + b"3,fine\n"
    parsed = parse("mixed.csv", data, column="text", id_column="id")
    first, bad, last = parsed.documents
    assert (first.text, last.text) == ("café", "fine")
    assert bad.external_id == "2" and bad.text == "" and "not UTF-8" in bad.error
    assert parsed.invalid == 1


def test_jsonl_with_field_and_id_field() -> None:
    lines = [{"key": "a", "text": "one"}, {"key": 2, "text": "two", "extra": 1}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    parsed = parse("docs.jsonl", data, column="text", id_column="key")
    assert [(d.external_id, d.text) for d in parsed.documents] == [("a", "one"), ("2", "two")]
    assert inspect("docs.jsonl", data).columns == ["key", "text", "extra"]


def test_jsonl_field_that_exists_nowhere_names_the_fields_seen() -> None:
    data = b'{"body": "x", "id": 1}\n{"body": "y", "lang": "en"}\n'
    with pytest.raises(InputError, match=r"no field 'text' on any line.*'body', 'id', 'lang'"):
        parse("docs.jsonl", data)
    with pytest.raises(InputError, match=r"no id field 'key'"):
        parse("docs.jsonl", data, column="body", id_column="key")


def test_jsonl_bad_lines_fail_alone_and_empty_ones_are_skipped() -> None:
    data = (
        b'{"text": "good"}\n'
        b"\n"
        b'{"text": ""}\n'
        b"{not json}\n"
        b'{"text": 42}\n'
        b'{"other": "no text field"}\n'
        b'["a", "list"]\n'
        b'{"text": "caf\xe9"}\n'
        b'{"text": "last"}\r\n'
    )
    parsed = parse("docs.jsonl", data)
    assert parsed.skipped_empty == 2
    assert [d.text for d in parsed.documents] == ["good", "", "", "", "", "", "last"]
    errors = [d.error for d in parsed.documents]
    assert errors[0] == errors[-1] == ""
    assert "Line 4 is not valid JSON" in errors[1]
    assert "field 'text' is a JSON int, not text" in errors[2]
    assert "Line 6 has no field 'text'" in errors[3]
    assert "JSON list, not an object" in errors[4]
    assert "Line 8 is not UTF-8" in errors[5]
    assert [d.external_id for d in parsed.documents] == ["1", "4", "5", "6", "7", "8", "9"]


def test_txt_one_document_per_line_or_the_whole_file() -> None:
    data = "\ufefffirst line\n\n  \nsecond line\r\nthird\n".encode()
    lines = parse("notes.txt", data, text_mode=TextMode.LINES)
    assert texts(lines.documents) == ["first line", "second line", "third"]
    assert [d.external_id for d in lines.documents] == ["1", "4", "5"]
    assert lines.skipped_empty == 2  # the blank and the white line
    whole = parse("notes.txt", data, text_mode=TextMode.WHOLE)
    assert len(whole.documents) == 1
    assert whole.documents[0].text.startswith("first line\n")
    assert whole.documents[0].external_id == "notes.txt"


def test_txt_line_that_is_not_utf8_fails_alone_but_a_whole_file_is_refused() -> None:
    data = b"ok\nnot \xff\xfe utf8\nok again\n"
    parsed = parse("notes.txt", data)
    assert [bool(d.error) for d in parsed.documents] == [False, True, False]
    assert "Line 2 is not UTF-8 text (byte 0xff" in parsed.documents[1].error
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0xff on line 2\)"):
        parse("notes.txt", data, text_mode="whole")


def test_zip_of_text_and_markdown_files_in_path_order() -> None:
    data = make_zip(
        {
            "b/second.md": b"# Second\nbody",
            "a.txt": "\ufefffirst".encode(),
            "image.png": b"\x89PNG....",
            "empty.txt": b"   \n",
            "dir/": b"",
            "__MACOSX/._a.txt": b"junk",
            ".DS_Store": b"junk",
        }
    )
    parsed = parse("docs.zip", data)
    assert [(d.external_id, d.text) for d in parsed.documents] == [
        ("a.txt", "first"),
        ("b/second.md", "# Second\nbody"),
    ]
    assert parsed.skipped_empty == 1
    assert parsed.ignored == ["image.png (not .txt or .md)"]


def test_zip_member_that_is_not_utf8_fails_alone() -> None:
    parsed = parse("docs.zip", make_zip({"a.txt": b"fine", "b.txt": b"caf\xe9"}))
    assert parsed.documents[0].error == ""
    assert "b.txt is not UTF-8 text" in parsed.documents[1].error


def test_zip_path_tricks_are_ignored_and_nothing_is_written() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../etc/evil.txt", b"escape")
        archive.writestr("/abs/evil.txt", b"absolute")
        archive.writestr("C:/evil.txt", b"drive")
        link = zipfile.ZipInfo("link.txt")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, b"/etc/passwd")
        archive.writestr("ok.txt", b"fine")
    parsed = parse("docs.zip", buffer.getvalue())
    assert texts(parsed.documents) == ["fine"]
    assert len(parsed.ignored) == 4 and all("unsafe path or link" in i for i in parsed.ignored)


def test_nested_archives_are_refused_by_name_or_by_content() -> None:
    inner = make_zip({"x.txt": b"inner"})
    with pytest.raises(InputError, match=r"contains another archive \('inner\.zip'\)"):
        parse("docs.zip", make_zip({"a.txt": b"a", "inner.zip": inner}))
    with pytest.raises(InputError, match=r"contains another archive \('sneaky\.txt'\)"):
        parse("docs.zip", make_zip({"a.txt": b"a", "sneaky.txt": inner}))
    with pytest.raises(InputError, match="another archive"):
        parse("docs.zip", make_zip({"data.tar.gz": b"\x1f\x8b\x08\x00"}))


def test_zip_bomb_is_refused_by_ratio_and_by_total_size() -> None:
    bomb = make_zip({"bomb.txt": b"a" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(InputError, match=r"looks like a zip bomb: 'bomb\.txt' is compressed"):
        parse("bomb.zip", bomb)
    files = {f"f{i}.txt": b"x" * 4000 for i in range(10)}
    with pytest.raises(InputError, match=r"unpacks to 39\.1 KB; the limit is 30\.0 KB"):
        parse("big.zip", make_zip(files), limits=Limits(zip_max_uncompressed_bytes=30 * 1024))


def test_zip_whose_headers_understate_the_size_is_not_unpacked_past_them() -> None:
    data = bytearray(make_zip({"a.txt": b"y" * 5000}, method=zipfile.ZIP_DEFLATED))
    # Rewrite the declared uncompressed size (local header and central directory) to 10.
    local = data.index(b"PK\x03\x04")
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    parsed = parse("liar.zip", bytes(data))
    assert parsed.documents[0].text == ""
    assert "could not be unpacked" in parsed.documents[0].error or "larger than" in (
        parsed.documents[0].error
    )


def test_encrypted_zip_member_fails_alone() -> None:
    data = bytearray(make_zip({"a.txt": b"fine", "secret.txt": b"hidden"}, zipfile.ZIP_STORED))
    # Mark the second member as encrypted in both headers (flag bit 0).
    local = data.index(b"PK\x03\x04", data.index(b"PK\x03\x04") + 4)
    data[local + 6] |= 1
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[central + 8] |= 1
    parsed = parse("docs.zip", bytes(data))
    assert parsed.documents[0].text == "fine"
    assert "secret.txt is encrypted" in parsed.documents[1].error


# --- limits -----------------------------------------------------------------------------------


def test_upload_size_limit() -> None:
    with pytest.raises(InputError, match=r"is 2\.0 KB; the largest file accepted is 1\.0 KB"):
        parse("docs.txt", b"x\n" * 1024, limits=Limits(max_upload_bytes=1024))


def test_item_count_limit_refuses_the_file_rather_than_dropping_documents() -> None:
    small = Limits(max_items=3)
    assert len(parse("ok.txt", b"a\nb\nc\n", limits=small).documents) == 3
    for name, data in [
        ("docs.txt", b"a\nb\nc\nd\n"),
        ("docs.csv", b"text\na\nb\nc\nd\n"),
        ("docs.jsonl", b'{"text":"a"}\n' * 4),
        ("docs.zip", make_zip({f"{i}.txt": b"a" for i in range(4)})),
    ]:
        with pytest.raises(InputError, match="more than 3 documents"):
            parse(name, data, limits=small)


def test_per_item_size_limit_fails_only_that_item() -> None:
    parsed = parse("docs.txt", b"short\n" + b"y" * 50 + b"\nok\n", limits=Limits(max_item_chars=20))
    assert [d.error for d in parsed.documents][0::2] == ["", ""]
    assert "Line 2 is 50 characters long; the limit is 20" in parsed.documents[1].error
    csv_parsed = parse("d.csv", b"text\n" + b"z" * 30 + b"\n", limits=Limits(max_item_chars=20))
    assert "30 characters long" in csv_parsed.documents[0].error


# --- files that are not what their name says -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("docs.csv", make_zip({"a.txt": b"a"}), r"named \.csv but is a ZIP archive"),
        ("docs.txt", b"%PDF-1.7\n...", r"named \.txt but is a PDF document"),
        ("docs.jsonl", b"\x89PNG\r\n\x1a\n....", r"named \.jsonl but is a PNG image"),
        ("docs.zip", b"id,text\n1,hello\n", r"named \.zip but is not a ZIP archive"),
        ("docs.zip", b"%PDF-1.4", r"named \.zip but is a PDF document"),
        ("docs.txt", "hello".encode("utf-16"), r"not a text file \(it contains NUL bytes"),
        ("docs.jsonl", b"just some text\nmore\n", r"named \.jsonl but line 1 is not JSON"),
        ("docs.jsonl", b"[1, 2]\n", r"line 1 is a JSON list, not an object"),
        ("docs.csv", b'{"text": "a"}\n', r"named \.csv but looks like JSON"),
        ("docs.zip", b"PK\x03\x04garbage", r"not a readable ZIP archive"),
        ("docs.txt", b"", r"is empty"),
        ("docs.csv", b"text\n\n\n", r"contains no documents \(2 empty skipped\)"),
        ("docs.txt", b"\n \n", r"is empty"),
    ],
)
def test_bad_files_get_a_clear_error(name: str, data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse(name, data)


def test_inspect_checks_the_content_too() -> None:
    with pytest.raises(InputError, match="not a readable ZIP archive"):
        inspect("a.zip", b"PK\x03\x04garbage")
    with pytest.raises(InputError, match="not UTF-8 text"):
        inspect("a.csv", b"id,t\xe9xt\n1,2\n")
    assert inspect("a.txt", b"hello\n").format == Format.TXT
