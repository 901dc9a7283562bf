"""The one-shot pages: what each form accepts and refuses (with the reason shown and the
user's text kept), what it queues, the content policy before queueing, the results
history, and that one user never reaches another's results."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.conftest import DIRECT_QUEUE
from tests.tiny.models import build_tiny_marian, build_tiny_t5, build_tiny_vit
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Priority, Status
from webapp.moderation import services as moderation
from webapp.moderation.models import ModerationEvent
from webapp.studio.models import Result

pytestmark = pytest.mark.django_db

THREAT = "I will kill you"  # blocked (violence) by the shipped rules
REPORT = "The river rose by ten centimetres overnight. The dam held and nobody was hurt."


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("studio-models")
    return {
        "t5": build_tiny_t5(root / "t5"),
        "marian": build_tiny_marian(root / "marian", "en", "de"),
        "vit": build_tiny_vit(root / "vit"),
    }


@pytest.fixture
def models(tiny_folders: dict[str, Path]) -> dict[str, ModelEntry]:
    """A summarizer, an English→German translator and an image classifier, on a queue
    that no worker serves (tests run the worker's task body themselves)."""
    return {
        task: ModelEntry.objects.create(
            name=f"tiny-{family}",
            task=task,
            source=str(tiny_folders[family]),
            queue=DIRECT_QUEUE,
            is_default=True,
        )
        for task, family in [
            ("summarize", "t5"),
            ("translate", "marian"),
            ("classify_image", "vit"),
        ]
    }


@pytest.fixture(autouse=True)
def uploads_dir(tmp_path: Path) -> Path:
    settings.UPLOADS_DIR = tmp_path / "uploads"
    return settings.UPLOADS_DIR


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def textarea(page: str) -> str:
    found = re.search(r'<textarea id="text"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "the page has the text box"
    return html.unescape(found.group(1))


def error(page: str) -> str:
    found = re.search(
        r'<div class="notice problem[^"]*" id="error" role="alert">(.*?)</div>', page, re.S
    )
    assert found, "the page shows an error"
    return html.unescape(found.group(1))


# --- Who may use the pages ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["summarize/", "translate/", "classify/", "history/", "result/1/"])
def test_visitors_are_sent_to_log_in(path: str) -> None:
    response = Client().get(f"/studio/{path}")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_each_page_offers_the_models_of_its_task(alice: Any, models: dict[str, ModelEntry]) -> None:
    client = client_for(alice)
    for path, model in [
        ("summarize", "tiny-t5"),
        ("translate", "tiny-marian"),
        ("classify", "tiny-vit"),
    ]:
        page = client.get(f"/studio/{path}/").content.decode()
        assert f">{model}</option>" in page
        assert page.count("</option>") >= 1 and "No " not in page.split("<main")[1][:2000]


def test_a_pending_user_sees_why_and_queues_nothing(
    make_user: Any, models: dict[str, ModelEntry]
) -> None:
    carol = make_user("carol", role="pending")
    client = client_for(carol)
    assert "waiting for an administrator" in client.get("/studio/summarize/").content.decode()
    response = client.post("/studio/summarize/", {"text": REPORT, "length": "short"})
    assert response.status_code == 400
    assert "waiting for an administrator" in error(response.content.decode())
    assert textarea(response.content.decode()) == REPORT
    assert not Generation.objects.exists()


def test_a_suspended_user_is_refused(
    alice: Any, make_user: Any, models: dict[str, ModelEntry]
) -> None:
    moderation.suspend(alice, "Repeated threats.", make_user("root", role="admin"))
    response = client_for(alice).post("/studio/translate/", {"text": REPORT, "target": "de"})
    assert response.status_code == 400 and "Repeated threats." in error(response.content.decode())
    assert not Generation.objects.exists()


def test_a_user_at_their_limit_is_told_so(alice: Any, models: dict[str, ModelEntry]) -> None:
    client = client_for(alice)
    for _ in range(settings.ATELIER_MAX_CONCURRENT_GENERATIONS):
        assert (
            client.post("/studio/summarize/", {"text": REPORT, "length": "short"}).status_code
            == 302
        )
    response = client.post("/studio/summarize/", {"text": REPORT, "length": "short"})
    assert response.status_code == 400 and "your limit" in error(response.content.decode())
    assert Generation.objects.count() == settings.ATELIER_MAX_CONCURRENT_GENERATIONS


# --- Summarize ---------------------------------------------------------------------------


def test_a_pasted_text_is_queued_for_a_summary_and_its_result_opens(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    client = client_for(alice)
    response = client.post("/studio/summarize/", {"text": REPORT, "length": "short"})
    generation = Generation.objects.get()
    assert (
        response.status_code == 302 and response["Location"] == f"/studio/result/{generation.pk}/"
    )
    assert generation.task == "summarize" and generation.user == alice
    assert generation.input == {"text": REPORT, "length": "short"}
    assert generation.queue == DIRECT_QUEUE and generation.priority == Priority.INTERACTIVE
    assert generation.status == Status.QUEUED and generation.model == models["summarize"]
    result = Result.objects.get()
    assert (result.user, result.generation, result.kind) == (alice, generation, "summarize")
    page = client.get(response["Location"]).content.decode()
    assert REPORT in page and 'data-status="queued"' in page and 'data-finished="0"' in page
    assert "tiny-t5" in page and "short" in page


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "notes.txt",
            "\ufeffFirst line.\nSecond line, café.\n".encode(),
            "First line.\nSecond line, café.",
        ),
        ("README.md", b"# Title\n\nSome *markdown* text.", "# Title\n\nSome *markdown* text."),
        ("wide.txt", "Zwölf Boxkämpfer.".encode("utf-16"), "Zwölf Boxkämpfer."),
    ],
)
def test_a_text_file_is_summarized_instead_of_the_box(
    alice: Any, models: dict[str, ModelEntry], name: str, data: bytes, expected: str
) -> None:
    response = client_for(alice).post(
        "/studio/summarize/",
        {"text": "", "length": "medium", "file": SimpleUploadedFile(name, data)},
    )
    assert response.status_code == 302
    generation = Generation.objects.get()
    assert generation.input == {"text": expected, "length": "medium"}
    assert Result.objects.get().file_name == name and Result.objects.get().title == name


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("report.docx", b"PK\x03\x04 a word file", "is not a .txt, .md or .pdf file"),
        ("photo.txt", png(), "is not a text file (it holds binary data)"),
        ("latin.txt", "Déjà vu".encode("latin-1"), "is not UTF-8 text"),
        ("empty.md", b"  \n\n ", "has no text"),
        ("fake.pdf", b"this is not a pdf", "is not a PDF file"),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_and_the_text_is_kept(
    alice: Any, models: dict[str, ModelEntry], name: str, data: bytes, message: str
) -> None:
    response = client_for(alice).post(
        "/studio/summarize/",
        {"text": REPORT, "length": "long", "file": SimpleUploadedFile(name, data)},
    )
    page = response.content.decode()
    assert response.status_code == 400 and message in error(page) and name in error(page)
    assert textarea(page) == REPORT and 'value="long" checked' in page
    assert not Generation.objects.exists() and not Result.objects.exists()


def make_pdf(text: str) -> bytes:
    """A one-page PDF with a text layer, written by hand (objects, then the xref table)."""
    stream = f"BT /F1 14 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 500 144] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_a_pdf_is_summarized_from_its_text_layer(alice: Any, models: dict[str, ModelEntry]) -> None:
    pdf = SimpleUploadedFile("paper.pdf", make_pdf("The river rose by three metres in May."))
    response = client_for(alice).post("/studio/summarize/", {"length": "short", "file": pdf})
    assert response.status_code == 302
    generation = Generation.objects.get()
    assert generation.input == {"text": "The river rose by three metres in May.", "length": "short"}


def test_a_pdf_without_text_or_damaged_is_refused_clearly(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    client = client_for(alice)
    for data, message in (
        (make_pdf(""), "has no text layer"),
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "could not be read as a PDF"),
    ):
        upload = SimpleUploadedFile("paper.pdf", data)
        response = client.post(
            "/studio/summarize/", {"text": REPORT, "length": "short", "file": upload}
        )
        assert response.status_code == 400 and message in error(response.content.decode())
        assert textarea(response.content.decode()) == REPORT
    assert not Generation.objects.exists()


def test_size_and_length_limits_are_clear(
    alice: Any, models: dict[str, ModelEntry], settings: Any
) -> None:
    settings.ATELIER_STUDIO_MAX_UPLOAD_BYTES = 100
    settings.ATELIER_STUDIO_MAX_TEXT_CHARS = 60
    client = client_for(alice)
    big = SimpleUploadedFile("big.txt", b"word " * 30)
    response = client.post("/studio/summarize/", {"text": "", "length": "short", "file": big})
    assert "larger than the limit of 100 bytes" in error(response.content.decode())
    response = client.post("/studio/summarize/", {"text": REPORT, "length": "short"})
    page = response.content.decode()
    assert response.status_code == 400
    assert f"The text has {len(REPORT)} characters, more than the limit of 60." in error(page)
    assert textarea(page) == REPORT
    for text, length, message in [
        ("   ", "short", "There is no text"),
        ("Hi.", "epic", "Choose a length"),
    ]:
        page = client.post("/studio/summarize/", {"text": text, "length": length}).content.decode()
        assert message in error(page)
    assert not Generation.objects.exists()


def test_a_blocked_text_creates_no_generation_and_says_why(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    client = client_for(alice)
    for path, fields in [
        ("/studio/summarize/", {"text": THREAT, "length": "short"}),
        ("/studio/translate/", {"text": THREAT, "target": "de"}),
    ]:
        response = client.post(path, fields)
        page = response.content.decode()
        assert response.status_code == 400 and 'class="notice problem blocked"' in page
        assert "Blocked by the content policy (violence)" in error(page)
        assert textarea(page) == THREAT
    assert not Generation.objects.exists() and not Result.objects.exists()
    events = ModerationEvent.objects.filter(user=alice, action="block")
    assert sorted(events.values_list("task", flat=True)) == ["summarize", "translate"]


def test_a_model_of_another_task_or_group_is_refused(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    response = client_for(alice).post(
        "/studio/summarize/",
        {"text": REPORT, "length": "short", "model": models["translate"].pk},
    )
    assert "not available to you" in error(response.content.decode())
    assert not Generation.objects.exists()


# --- Translate ---------------------------------------------------------------------------


def test_a_translation_detects_the_source_unless_it_is_named(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    client = client_for(alice)
    assert client.post("/studio/translate/", {"text": REPORT, "target": "de"}).status_code == 302
    assert (
        client.post(
            "/studio/translate/", {"text": REPORT, "source": "en", "target": "de"}
        ).status_code
        == 302
    )
    detected, named = Generation.objects.order_by("pk")
    assert detected.task == "translate" and detected.input == {"text": REPORT, "target": "de"}
    assert named.input == {"text": REPORT, "target": "de", "source": "en"}
    page = client.get(f"/studio/result/{detected.pk}/").content.decode()
    assert "detecting the language" in page and "German" in page


def test_the_page_knows_which_languages_each_model_translates(
    alice: Any, models: dict[str, ModelEntry], tiny_folders: dict[str, Path]
) -> None:
    chat_translator = ModelEntry.objects.create(
        name="tiny-t5-as-chat",
        task="translate",
        source="no/such/model-anywhere",
        queue=DIRECT_QUEUE,
    )
    page = client_for(alice).get("/studio/translate/").content.decode()
    offers = re.search(r'<script id="language-offers" type="application/json">(.*?)</script>', page)
    assert offers is not None
    found = json.loads(offers.group(1))
    assert found == {
        str(models["translate"].pk): {
            "family": "marian", "sources": ["en"], "targets": ["de"], "pairs": [["en", "de"]]
        }
    }  # fmt: skip
    assert str(chat_translator.pk) not in found  # unknown without loading it: everything offered


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target": "fr"}, "tiny-marian cannot translate French; it translates en→de."),
        ({"source": "fr", "target": "de"}, "tiny-marian cannot translate French to German"),
        ({"source": "de", "target": "de"}, "The source and target languages are both German"),
        ({"target": ""}, "Choose the language to translate into."),
        ({"target": "xx"}, "Choose the language to translate into."),
        ({"source": "klingon", "target": "de"}, "Unknown source language 'klingon'."),
    ],
)
def test_a_translation_the_model_cannot_do_is_refused_before_queueing(
    alice: Any, models: dict[str, ModelEntry], fields: dict[str, str], message: str
) -> None:
    response = client_for(alice).post("/studio/translate/", {"text": REPORT, **fields})
    page = response.content.decode()
    assert response.status_code == 400 and message in error(page)
    assert textarea(page) == REPORT and not Generation.objects.exists()


# --- Classify an image -------------------------------------------------------------------


def test_an_uploaded_image_is_stored_and_queued(
    alice: Any, models: dict[str, ModelEntry], uploads_dir: Path
) -> None:
    client = client_for(alice)
    response = client.post("/studio/classify/", {"image": SimpleUploadedFile("cat.png", png())})
    assert response.status_code == 302
    generation = Generation.objects.get()
    assert generation.task == "classify_image" and generation.input["top_k"] == 5
    stored = uploads_dir / generation.input["image"]
    assert stored.read_bytes() == png() and stored.parent.name == str(alice.pk)
    image = client.get(f"/studio/result/{generation.pk}/image")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert image.content == png()
    assert "cat.png" in client.get(f"/studio/result/{generation.pk}/").content.decode()


def test_images_that_cannot_be_used_are_refused(
    alice: Any, models: dict[str, ModelEntry], uploads_dir: Path, settings: Any
) -> None:
    client = client_for(alice)
    cases = [
        ({}, "Choose an image"),
        ({"image": SimpleUploadedFile("notes.png", b"plain text, not a picture")}, "not an image"),
        ({"image": SimpleUploadedFile("empty.jpg", b"")}, "the file is empty"),
    ]
    for fields, message in cases:
        response = client.post("/studio/classify/", fields)
        assert response.status_code == 400 and message in error(response.content.decode())
    settings.ATELIER_MAX_IMAGE_BYTES = 50
    response = client.post("/studio/classify/", {"image": SimpleUploadedFile("big.png", png())})
    assert "larger than the limit" in error(response.content.decode())
    assert not Generation.objects.exists()
    assert not uploads_dir.exists() or not any(uploads_dir.rglob("*.*"))


# --- History, isolation, delete ----------------------------------------------------------


def test_results_are_listed_newest_first_beside_each_page(
    alice: Any, models: dict[str, ModelEntry]
) -> None:
    client = client_for(alice)
    client.post("/studio/summarize/", {"text": "First report. " * 3, "length": "short"})
    client.post("/studio/translate/", {"text": "Good morning to you all.", "target": "de"})
    page = client.get("/studio/history/").content.decode()
    assert page.index("Good morning") < page.index("First report")
    assert "Summary" in page and "Translation" in page
    beside = client.get("/studio/classify/").content.decode()
    assert "First report" in beside and "→ German: Good morning" in beside


def test_one_user_never_reaches_another_users_results(
    alice: Any, bob: Any, models: dict[str, ModelEntry]
) -> None:
    mine = client_for(alice)
    mine.post("/studio/classify/", {"image": SimpleUploadedFile("private.png", png())})
    generation = Generation.objects.get()
    theirs = client_for(bob)
    for path in ["", "image", "download.txt"]:
        assert theirs.get(f"/studio/result/{generation.pk}/{path}").status_code == 404
    assert theirs.post(f"/studio/result/{generation.pk}/delete/").status_code == 404
    assert "private.png" not in theirs.get("/studio/history/").content.decode()
    assert "private.png" not in theirs.get("/studio/summarize/").content.decode()
    assert Result.objects.filter(generation=generation).exists()
    assert mine.get(f"/studio/result/{generation.pk}/").status_code == 200


def test_deleting_a_result_removes_its_generation_and_image(
    alice: Any, models: dict[str, ModelEntry], uploads_dir: Path
) -> None:
    client = client_for(alice)
    client.post("/studio/classify/", {"image": SimpleUploadedFile("gone.png", png())})
    generation = Generation.objects.get()
    stored = uploads_dir / generation.input["image"]
    assert stored.exists()
    response = client.post(f"/studio/result/{generation.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/studio/history/"
    assert "Deleted “gone.png”." in response.content.decode()
    assert not Generation.objects.exists() and not Result.objects.exists()
    assert not stored.exists()
    assert client.get(f"/studio/result/{generation.pk}/").status_code == 404


def test_a_finished_summary_downloads_as_text(alice: Any, models: dict[str, ModelEntry]) -> None:
    client = client_for(alice)
    client.post(
        "/studio/summarize/",
        {
            "text": "",
            "length": "short",
            "file": SimpleUploadedFile("Flood report.txt", REPORT.encode()),
        },
    )
    Generation.objects.update(status=Status.DONE, output="The dam held.")
    generation = Generation.objects.get()
    response = client.get(f"/studio/result/{generation.pk}/download.txt")
    assert response.content.decode() == "The dam held."
    assert response["Content-Disposition"] == 'attachment; filename="summary-flood-report.txt"'
