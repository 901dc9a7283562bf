"""Each task end to end from the worker with the starter models: `prepare_models` prepares
and registers the pack, and a Generation of every task runs on the task's default model
through `run_next`, as a worker runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.conftest import DIRECT_QUEUE
from tests.generation.test_starter_extra import sample_photo
from webapp.catalog.models import ModelEntry
from webapp.inference import services, uploads
from webapp.inference.models import Generation, Status
from workers import model_cache
from workers.runner import run_next

pytestmark = [pytest.mark.django_db, pytest.mark.e2e]

REPORT = (
    "The city council met on Tuesday to discuss the new bicycle lanes. After two hours of "
    "debate, members voted seven to two to build lanes on Main Street and Harbour Road by "
    "next spring. The project will cost 1.2 million euros, paid from the transport budget. "
    "Shop owners on Main Street worried about losing parking spaces, so the council agreed "
    "to add a car park behind the market. Work starts in March."
)


@pytest.fixture
def catalog(starter_models_dir: Path, tmp_path: Path) -> Iterator[dict[str, ModelEntry]]:
    settings.MODELS_DIR = starter_models_dir
    settings.UPLOADS_DIR = tmp_path / "uploads"
    model_cache.clear()
    call_command("prepare_models", stdout=open("/dev/null", "w"))  # noqa: SIM115
    ModelEntry.objects.update(queue=DIRECT_QUEUE)  # driven by hand below
    entries = {entry.name: entry for entry in ModelEntry.objects.all()}
    yield entries
    model_cache.clear()


def run(
    user: Any, entry: ModelEntry, task: str, input: dict[str, Any], **params: Any
) -> Generation:
    generation = services.create_generation(
        user=user, model=entry, task=task, input=input, params=params
    )
    assert run_next(DIRECT_QUEUE) == generation.pk
    generation.refresh_from_db()
    assert generation.status == Status.DONE, generation.error
    return generation


def default(task: str) -> ModelEntry:
    return ModelEntry.objects.get(task=task, is_default=True)


def test_the_pack_is_registered_with_a_default_for_every_task(
    catalog: dict[str, ModelEntry],
) -> None:
    assert {e.task for e in catalog.values() if e.is_default} == {
        "chat", "summarize", "translate", "classify_image", "embed",
    }  # fmt: skip
    assert default("chat").name == "SmolLM2-135M-Instruct"
    assert "Weak" in default("translate").description
    rnn = catalog["Shakespeare GRU"]
    assert (rnn.backend, rnn.task, rnn.is_default) == ("rnn", "chat", False)
    assert not rnn.takes_system_prompt  # it continues text; the page offers none
    # The 135M chat model starts with its model card's sampling and a repetition penalty.
    assert default("chat").sampling_defaults() == {
        "temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1,
    }  # fmt: skip
    call_command("prepare_models", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert ModelEntry.objects.count() == len(catalog)  # idempotent


def test_every_task_runs_from_the_worker_with_the_starter_models(
    alice: Any, catalog: dict[str, ModelEntry]
) -> None:
    greedy = {"temperature": 0.0, "max_new_tokens": 24}
    question = [{"role": "user", "content": "What is the capital of France?"}]
    chat = run(alice, default("chat"), "chat", {"system": "", "messages": question}, **greedy)
    assert "Paris" in chat.output

    summary = run(alice, default("summarize"), "summarize", {"text": REPORT, "length": "short"})
    assert 0 < len(summary.output) < len(REPORT)

    translation = run(
        alice, default("translate"), "translate",
        {"text": "Good morning. The weather is lovely today.", "target": "fr"},
    )  # fmt: skip
    assert translation.output.strip() and translation.result["source"] == "en"  # type: ignore[index]

    image = uploads.save_image(alice.pk, sample_photo("flower.jpg"))
    labels = run(alice, default("classify_image"), "classify_image", {"image": image})
    assert labels.result["labels"][0]["label"] == "daisy"  # type: ignore[index]

    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock prices fell."]
    vectors = run(alice, default("embed"), "embed", {"texts": texts}).result["embeddings"]  # type: ignore[index]
    similar = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    unrelated = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    assert similar > unrelated + 0.3

    shakespeare = run(
        alice, catalog["Shakespeare GRU"], "chat",
        {"system": "", "messages": [{"role": "user", "content": "ROMEO:\n"}]},
        temperature=0.8, max_new_tokens=200, seed=1,
    )  # fmt: skip
    words = shakespeare.output.split()
    assert len(shakespeare.output) == 200 and len(words) > 20
    assert sum(w.strip(",.;:!?'").isalpha() for w in words) / len(words) > 0.8  # mostly words
