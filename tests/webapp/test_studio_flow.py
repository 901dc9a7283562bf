"""Each one-shot page end to end in one process: the form queues a Generation, the
worker's own task body (`workers.runner.run_next`) runs it on a tiny real model, and the
result page shows what it produced: the summary, the translation with its detected
language, the image's labels with their bars."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import DIRECT_QUEUE
from tests.tiny.models import IMAGE_LABELS
from tests.webapp.test_studio_views import (
    REPORT,
    client_for,
    models,
    png,
    tiny_folders,
    uploads_dir,
)
from webapp.inference.models import Generation, Status
from workers import model_cache
from workers.runner import run_next

__all__ = ["models", "tiny_folders", "uploads_dir"]  # fixtures used here

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache() -> Any:
    model_cache.clear()
    yield
    model_cache.clear()


def run_posted(client: Any, path: str, fields: dict[str, Any]) -> tuple[Generation, str]:
    """Post the form, run the queued generation as a worker would, open its result page."""
    response = client.post(path, fields)
    assert response.status_code == 302, response.content.decode()[-2000:]
    generation = Generation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))
    assert run_next(DIRECT_QUEUE) == generation.pk
    generation.refresh_from_db()
    return generation, client.get(response["Location"]).content.decode()


def test_a_summary_is_written_and_shown(alice: Any, models: Any) -> None:
    generation, page = run_posted(
        client_for(alice), "/studio/summarize/", {"text": REPORT * 5, "length": "short"}
    )
    assert generation.status == Status.DONE, generation.error
    assert generation.output and generation.result["length"] == "short"  # type: ignore[index]
    shown = re.search(r'<div id="output" class="output" aria-live="polite">(.*?)</div>', page, re.S)
    assert shown is not None and html.unescape(shown.group(1)) == generation.output
    assert 'data-finished="1"' in page and 'id="copy"' in page and "Download .txt" in page


def test_a_translation_shows_the_detected_language(alice: Any, models: Any) -> None:
    text = "The weather is lovely today and we are going for a long walk by the sea."
    generation, page = run_posted(
        client_for(alice), "/studio/translate/", {"text": text, "target": "de"}
    )
    assert generation.status == Status.DONE, generation.error
    assert generation.result == {"source": "en", "target": "de", "detected": True}
    assert "English (detected) → German" in page


def test_an_image_gets_its_labels_as_bars(alice: Any, models: Any) -> None:
    generation, page = run_posted(
        client_for(alice), "/studio/classify/", {"image": SimpleUploadedFile("red.png", png())}
    )
    assert generation.status == Status.DONE, generation.error
    labels = generation.result["labels"]  # type: ignore[index]
    assert len(labels) == 5 and {item["label"] for item in labels} <= set(IMAGE_LABELS)
    bars = re.findall(
        r'<li><span class="label">(.*?)</span><span class="bar"><span style="width: ([0-9.]+)%">',
        page,
    )
    assert [label for label, _ in bars] == [item["label"] for item in labels]
    widths = [float(width) for _, width in bars]
    assert widths == sorted(widths, reverse=True) and 0 < sum(widths) <= 100.5
    assert widths[0] == pytest.approx(labels[0]["score"] * 100, abs=0.06)


def test_an_unsupported_detected_language_fails_with_the_models_pairs(
    alice: Any, models: Any
) -> None:
    """The page cannot know the source before it is detected: the worker's check answers."""
    text = "Le temps est magnifique aujourd'hui et nous allons faire une longue promenade."
    generation, page = run_posted(
        client_for(alice), "/studio/translate/", {"text": text, "target": "de"}
    )
    assert generation.status == Status.FAILED
    assert "en→de" in generation.error and generation.error in page.replace("&#x27;", "'")
    assert 'data-status="failed"' in page
