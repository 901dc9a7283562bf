"""Hostile inputs through the real views: where a library's own limit (the csv module's
field size, Python's JSON nesting depth, pypdf's caps, an image header, a zip member, a
full disk) would surface as an HTTP 500, the person gets the page's, the API's or the
form's usual error instead, and nothing already stored is lost.

The WebSocket frames are in tests/webapp/test_limits.py (a real web server)."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.conftest import DIRECT_QUEUE
from tests.webapp.test_jobs_views import summarizer  # noqa: F401  (the fixture)
from webapp.api import keys
from webapp.api.models import ApiFile
from webapp.catalog.models import ModelEntry
from webapp.chat.models import Conversation
from webapp.inference.models import Generation
from webapp.jobs.models import ItemStatus, Job, Upload
from webapp.studio.documents import read_document

pytestmark = pytest.mark.django_db

NESTING_BOMB = b"[" * 100_000 + b"]" * 100_000
MB = 1024 * 1024


def logged_in(user: Any) -> Client:
    client = Client(raise_request_exception=False)  # a 500 is answered, not raised here
    client.force_login(user)
    return client


@pytest.fixture
def classifier(db: Any) -> ModelEntry:
    # The web process never loads a model: the row is all the classify page needs.
    return ModelEntry.objects.create(
        name="some-vit", task="classify_image", source="unused", queue=DIRECT_QUEUE
    )


@pytest.fixture
def fresh_csv_module() -> Iterator[None]:
    """The csv module's field limit as a new process has it (one global value, which
    another test may have raised)."""
    before = csv.field_size_limit(131072)
    yield
    csv.field_size_limit(before)


# --- batch job files ------------------------------------------------------------------


def upload(client: Client, name: str, data: bytes) -> Any:
    return client.post("/jobs/", {"task": "summarize", "file": SimpleUploadedFile(name, data)})


@pytest.mark.usefixtures("summarizer", "fresh_csv_module")
def test_a_csv_with_a_10_mb_cell_starts_a_job_with_that_row_refused(alice: Any) -> None:
    client = logged_in(alice)
    data = b"id,text\nA,The river rose.\nB," + b"y" * (10 * MB) + b"\nC,The dam held.\n"
    response = upload(client, "docs.csv", data)
    assert response.status_code == 302, response.content[:500]
    configure = response["Location"]
    page = client.get(configure)
    assert page.status_code == 200
    limit = settings.ATELIER_JOB_MAX_ITEM_CHARS
    assert f"10,485,760 characters long; the limit is {limit:,}" in page.content.decode()
    model = ModelEntry.objects.get()  # the summarizer
    choices = {"column": "text", "id_column": "id", "length": "short", "model": model.pk}
    response = client.post(configure, choices)
    assert response.status_code == 302, response.content[:2000]
    job = Job.objects.get()
    items = {item.external_id: item for item in job.items.all()}
    assert items["B"].status == ItemStatus.INVALID and "10,485,760 characters" in items["B"].error
    assert items["A"].text == "The river rose." and items["C"].text == "The dam held."


def test_a_csv_cell_over_the_csv_modules_limit_is_a_document_up_to_the_item_limit(
    alice: Any, settings: Any, fresh_csv_module: None
) -> None:
    from webapp.jobs import inputs, services

    settings.ATELIER_JOB_MAX_ITEM_CHARS = 300_000
    cell = "z" * 200_000  # over the csv module's 131072, within the job's limit
    parsed = inputs.parse("docs.csv", f"text\n{cell}\n".encode(), limits=services.limits())
    assert [d.text for d in parsed.documents] == [cell]


def test_json_lines_with_a_nesting_bomb_are_a_clear_error(alice: Any) -> None:
    client = logged_in(alice)
    first = upload(client, "bomb.jsonl", NESTING_BOMB + b"\n")
    assert first.status_code == 200 and "nested too deeply" in first.content.decode()
    later = upload(client, "docs.jsonl", b'{"text": "fine"}\n{"text": ' + NESTING_BOMB + b"}\n")
    assert later.status_code == 302  # the file is usable; that line becomes its own error
    page = client.get(later["Location"]).content.decode()
    assert "Line 2 is JSON nested too deeply to read." in page


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def claiming(data: bytes, name: bytes, size: int) -> bytes:
    """The archive with `name`'s uncompressed size in its central directory changed."""
    at = data.rindex(b"PK\x01\x02")  # the last member's central directory entry
    assert data[at + 46 : at + 46 + len(name)] == name
    return data[: at + 24] + size.to_bytes(4, "little") + data[at + 28 :]


def test_zips_with_a_huge_member_are_refused_with_the_reason(alice: Any) -> None:
    client = logged_in(alice)
    bomb = zip_of({"a.txt": b"fine", "b.txt": b"\0" * (20 * MB)})  # 1000 to 1
    liar = claiming(zip_of({"a.txt": b"fine", "b.txt": b"x" * 1000}), b"b.txt", 2**32 - 1)
    cases = [(bomb, "looks like a zip bomb"), (liar, "unpacks to 4.0 GB")]
    for data, message in cases:
        response = upload(client, "docs.zip", data)
        assert response.status_code == 302  # the second step unpacks it, and says why not
        page = client.get(response["Location"])
        assert page.status_code == 200 and message in page.content.decode(), message
    assert not Job.objects.exists()


# --- JSON nesting bombs elsewhere -------------------------------------------------------


def test_an_api_body_that_is_a_nesting_bomb_is_400_invalid_json(alice: Any) -> None:
    secret = keys.create_key(alice, "k").secret
    body = b'{"model": "x", "messages": ' + NESTING_BOMB + b"}"
    response = Client().post(
        "/v1/chat/completions",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "invalid_json"
    assert not Generation.objects.exists()


def test_a_chat_import_that_is_a_nesting_bomb_is_refused(alice: Any) -> None:
    upload = SimpleUploadedFile("x.json", b'{"format": ' + NESTING_BOMB + b"}")
    response = logged_in(alice).post(reverse("chat:import"), {"file": upload}, follow=True)
    assert response.status_code == 200
    assert "nested too deeply" in response.content.decode()
    assert not Conversation.objects.exists()


# --- PDF documents -----------------------------------------------------------------------


def pdf(content: bytes, *, pages: int = 1) -> bytes:
    """A minimal PDF whose page(s) draw `content`, a compressed content stream."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join([b"3 0 R"] * pages), pages),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (6, xref))
    return out.getvalue()


def text_op(text: bytes) -> bytes:
    return zlib.compress(b"BT /F1 12 Tf 72 712 Td (" + text + b") Tj ET", 9)


def summarize_file(client: Client, name: str, data: bytes) -> Any:
    return client.post(
        "/studio/summarize/", {"length": "short", "file": SimpleUploadedFile(name, data)}
    )


def test_bad_pdfs_get_the_pages_error(alice: Any) -> None:
    client = logged_in(alice)
    readable = read_document("ok.pdf", pdf(text_op(b"Hello")), max_bytes=MB, max_chars=100)
    assert readable == "Hello"  # the builder makes good PDFs: below, each fails for its reason
    cases = [
        (b"%PDF-1.4\n" + b"\x00\xff" * 1000, "could not be read as a PDF"),
        (pdf(text_op(b"Hello"))[:200], "could not be read as a PDF"),
        (pdf(text_op(b"A" * (100 * MB))), "a PDF bomb?"),  # 100 MB of text in 100 KB
        (pdf(text_op(b"Hello"), pages=200_000), "a PDF bomb?"),  # pypdf's array cap
    ]
    for data, message in cases:
        response = summarize_file(client, "report.pdf", data)
        assert response.status_code == 400, response.content[:300]
        assert message in response.content.decode(), message
    assert not Generation.objects.exists()


# --- images ------------------------------------------------------------------------------


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its header claiming another size (and the header's checksum fixed)."""
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:29]
    return data[:12] + header + zlib.crc32(header).to_bytes(4, "big") + data[33:]


def exif() -> bytes:
    from PIL import Image

    tags = Image.Exif()
    tags[0x010F] = "Camera"  # Make
    tags[0x0112] = 6  # Orientation: rotated
    return tags.tobytes()


EXIF = exif()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True, "exif": EXIF}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"quality": 50}),
        ("WEBP", {"exif": EXIF}),  # VP8X
    ],
)
def test_the_size_read_from_the_header_is_the_size_pillow_decodes(
    fmt: str, options: dict[str, Any]
) -> None:
    """Every allowed format's header is read right, so no good image is refused."""
    from PIL import Image

    from generation.images import image_size

    buffer = io.BytesIO()
    Image.new("RGBA" if fmt == "WEBP" else "RGB", (321, 123)).save(buffer, fmt, **options)
    data = buffer.getvalue()
    assert image_size(data) == Image.open(io.BytesIO(data)).size == (321, 123)


@pytest.fixture
def uploads_dir(tmp_path: Path, settings: Any) -> Path:
    settings.UPLOADS_DIR = tmp_path / "uploads"
    return Path(settings.UPLOADS_DIR)


def classify(client: Client, name: str, data: bytes) -> Any:
    return client.post("/studio/classify/", {"image": SimpleUploadedFile(name, data)})


def test_hostile_image_headers_are_refused_before_anything_is_stored(
    alice: Any, classifier: ModelEntry, uploads_dir: Path
) -> None:
    client = logged_in(alice)
    cases = [
        (with_png_size(png(), 100_000, 100_000), "100000 x 100000 pixels; at most 40 million"),
        (with_png_size(png(), 0, 30), "the image has no pixels"),
        (png()[:20], "header is damaged or cut short"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "header is damaged or cut short"),
        (b"\xff\xd8" + b"\xff\x01" * (MB // 2), "header is damaged or cut short"),  # no end
        (b"GIF89a\xff\xff\xff\xff" + b"\x00" * 20, "65535 x 65535 pixels"),
    ]
    for data, message in cases:
        response = classify(client, "cat.png", data)
        assert response.status_code == 400, response.content[:300]
        assert message in response.content.decode(), message
    assert not Generation.objects.exists()
    assert not uploads_dir.exists() or not any(uploads_dir.rglob("*.*"))


# --- a full disk -------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[str]:
    """`path` on a filesystem of `size_kib` KiB: a tmpfs when this process may mount one
    (root), else a per-file size limit (RLIMIT_FSIZE) that fails writes past it with
    EFBIG. Yields which one."""
    path.mkdir(parents=True)
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    if mounted:
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_kib * 1024, hard))
    try:
        yield "RLIMIT_FSIZE"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def fill(path: Path) -> None:
    """Write to `path` until the disk refuses."""
    with contextlib.suppress(OSError), open(path / "filler", "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()


def test_a_full_disk_refuses_the_upload_clearly_and_keeps_what_was_stored(
    alice: Any, classifier: ModelEntry, settings: Any
) -> None:
    client = logged_in(alice)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "uploads"
        with small_disk(root, 256) as kind:
            settings.UPLOADS_DIR = root
            first = png((64, 64))
            assert classify(client, "first.png", first).status_code == 302
            kept = root / Generation.objects.get().input["image"]
            if kind == "tmpfs":
                fill(root)
                refused = png((80, 80))
            else:  # only a file past the limit fails
                refused = png((80, 80)) + b"\0" * (300 * 1024)
            for _ in range(2):  # and again: a failed write leaves no debris that breaks it
                response = classify(client, "second.png", refused)
                assert response.status_code == 400, response.content[:300]
                page = response.content.decode()
                assert "no room to store the file right now; nothing was saved" in page, kind
            assert Generation.objects.count() == 1
            assert kept.read_bytes() == first
            assert not list(root.rglob("*.partial"))
            (root / "filler").unlink(missing_ok=True)
            assert classify(client, "third.png", png()).status_code == 302  # room again
            assert Generation.objects.count() == 2 and kept.read_bytes() == first


def api_file(client: Client, secret: str, data: bytes) -> Any:
    return client.post(
        "/v1/files",
        {"file": SimpleUploadedFile("in.jsonl", data), "purpose": "batch"},
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


def batch_lines(count: int, chars: int) -> bytes:
    """A valid batch file of `count` requests, each about `chars` characters that
    PostgreSQL cannot compress much."""
    return b"\n".join(
        json.dumps(
            {
                "custom_id": f"q{number}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
            }
        ).encode()
        for number, text in enumerate(text_of(chars).decode() for _ in range(count))
    )


def test_a_full_temporary_folder_refuses_form_and_api_uploads_clearly(
    alice: Any, classifier: ModelEntry, settings: Any, uploads_dir: Path
) -> None:
    """Django spools a form's files past FILE_UPLOAD_MAX_MEMORY_SIZE to its temporary
    folder while it reads the request, before any view runs: with that folder full, the
    page answers 507 saying so and the API its own 507, and the next upload that fits works."""
    client = logged_in(alice)
    secret = keys.create_key(alice, "k").secret
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # every file here goes through the folder
    big_image = png((80, 80)) + b"\0" * (300 * 1024)  # past the 256 KiB either way
    with tempfile.TemporaryDirectory() as scratch:
        spool = Path(scratch) / "spool"
        with small_disk(spool, 256) as kind:
            settings.FILE_UPLOAD_TEMP_DIR = str(spool)
            response = classify(client, "big.png", big_image)
            assert response.status_code == 507, (kind, response.content[:300])
            page = response.content.decode()
            assert "No room to store this right now" in page and "nothing of this request" in page
            response = api_file(client, secret, batch_lines(1, 300 * 1024))
            assert response.status_code == 507, (kind, response.content[:300])
            error = response.json()["error"]
            assert error["code"] == "insufficient_storage", error
            assert "no room to store the file right now; nothing was saved" in error["message"]
            assert not Generation.objects.exists() and not ApiFile.objects.exists()
            assert not list(spool.iterdir())  # no temporary file left behind
            # What fits still goes through the same folder.
            assert classify(client, "small.png", png((80, 80)) + b"\0" * 4096).status_code == 302
            assert api_file(client, secret, batch_lines(1, 4096)).status_code == 200
    assert Generation.objects.count() == 1 and ApiFile.objects.count() == 1


@contextlib.contextmanager
def database_on_small_disk(tables: list[str], size_kib: int) -> Iterator[None]:
    """The tables (and their TOAST tables) moved to a PostgreSQL tablespace on a tmpfs of
    `size_kib` KiB, and back afterwards. Needs root and the PostgreSQL server on this
    machine; the test is skipped otherwise."""
    from django.db import connection

    host = connection.settings_dict.get("HOST") or "localhost"
    if connection.vendor != "postgresql" or host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("needs the PostgreSQL server on this machine")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem for PostgreSQL")
    name = f"atelier_test_small_{os.getpid()}"
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o711)  # noqa: S103 - PostgreSQL's user passes through (x only)
        where = Path(scratch) / "tablespace"
        with small_disk(where, size_kib) as kind:
            assert kind == "tmpfs"  # PostgreSQL's own writes are not limited by our rlimit
            shutil.chown(where, "postgres", "postgres")
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE TABLESPACE {name} LOCATION '{where}'")
                try:
                    for table in tables:  # without the dead rows of earlier tests
                        cursor.execute(f"VACUUM FULL {table}")
                        cursor.execute(f"ALTER TABLE {table} SET TABLESPACE {name}")
                    yield
                finally:
                    for table in tables:
                        cursor.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
                    cursor.execute(f"DROP TABLESPACE {name}")


def text_of(size: int) -> bytes:
    """Text that PostgreSQL cannot compress much (base64 of random bytes), one line."""
    return base64.b64encode(os.urandom(size * 3 // 4))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("summarizer")
def test_a_full_database_disk_refuses_job_files_clearly_and_keeps_what_was_stored(
    alice: Any,
) -> None:
    """Job files and their items live in PostgreSQL: with its disk full, the upload and
    the new job each get the form's error, and what was stored before is all there."""
    client = logged_in(alice)
    lines = [text_of(90_000) for _ in range(4)]
    stored = b"\n".join(lines) + b"\n"
    configure = upload(client, "first.txt", stored)["Location"]
    choices = {"text_mode": "lines", "length": "short", "model": ModelEntry.objects.get().pk}
    # The stored file moves there too: 360 KB of 512; the rest is too little for either.
    with database_on_small_disk(["jobs_upload", "jobs_jobitem"], 512):
        response = upload(client, "second.txt", text_of(400_000))
        assert response.status_code == 200
        assert "no room to store the file right now; nothing was saved" in response.content.decode()
        response = client.post(configure, choices)
        assert response.status_code == 200
        page = response.content.decode()
        assert "The job could not be created: the server has no room" in page
        assert not Job.objects.exists()
        assert bytes(Upload.objects.get().data) == stored
    assert client.post(configure, choices).status_code == 302  # room again
    assert [item.text.encode() for item in Job.objects.get().items.all()] == lines


@pytest.mark.django_db(transaction=True)
def test_a_full_database_disk_refuses_an_api_file_clearly_and_keeps_what_was_stored(
    alice: Any,
) -> None:
    client = logged_in(alice)
    secret = keys.create_key(alice, "k").secret
    stored = batch_lines(4, 90_000)
    assert api_file(client, secret, stored).status_code == 200
    with database_on_small_disk(["api_apifile"], 512):
        response = api_file(client, secret, batch_lines(4, 100_000))
        assert response.status_code == 507, response.content[:300]
        assert response.json()["error"]["code"] == "insufficient_storage"
        assert bytes(ApiFile.objects.get().data) == stored
    assert api_file(client, secret, batch_lines(1, 1000)).status_code == 200  # room again
    assert ApiFile.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_full_database_disk_answers_a_page_with_507_and_keeps_what_was_stored(
    alice: Any, chat_model: ModelEntry
) -> None:
    """A page whose write the full disk refuses (a chat import: twenty long messages) gets
    the 507 page, not a 500; nothing of it is kept and the conversations stored are intact."""
    client = logged_in(alice)

    def conversation(title: str, count: int) -> SimpleUploadedFile:
        messages = [
            # Hex, one long word: no rule finds a word in it (base64's / and + make words).
            {"role": ("user", "assistant")[n % 2], "content": os.urandom(15_000).hex()}
            for n in range(count)
        ]
        data = {"format": "atelier.conversation", "version": 1, "title": title}
        body = json.dumps({**data, "messages": messages}).encode()
        return SimpleUploadedFile(f"{title}.json", body, content_type="application/json")

    assert client.post("/chat/import/", {"file": conversation("kept", 2)}).status_code == 302
    with database_on_small_disk(["chat_message"], 512):
        response = client.post("/chat/import/", {"file": conversation("big", 20)})
        assert response.status_code == 507, response.content[:300]
        assert "No room to store this right now" in response.content.decode()
        assert list(Conversation.objects.values_list("title", flat=True)) == ["kept"]
    assert client.post("/chat/import/", {"file": conversation("later", 2)}).status_code == 302
    assert Conversation.objects.count() == 2
