"""Every task runs from the worker through the same Generation road as chat: a queued
Generation, claimed by `run_next`, streamed to Redis, finished in the database. Real tiny
models of each family, loaded through the catalog and the worker's model cache."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from django.conf import settings
from transformers import AutoTokenizer

from generation.rnn.loading import save_rnn_folder
from generation.rnn.model import CharRNN, RNNConfig
from generation.rnn.vocab import CharVocab
from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from tests.tiny.models import (
    IMAGE_LABELS,
    build_tiny_bart,
    build_tiny_bert,
    build_tiny_marian,
    build_tiny_t5,
    build_tiny_vit,
)
from webapp.catalog.models import ModelEntry
from webapp.inference import services, streams, uploads
from webapp.inference.models import Generation, Status
from workers import handlers, heartbeat, model_cache, runner
from workers.runner import run_next

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path) -> Any:
    model_cache.clear()
    settings.UPLOADS_DIR = tmp_path / "uploads"
    yield
    model_cache.clear()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task-models")
    vocab = CharVocab.build("To be, or not to be: that is the question.\n")
    rnn = CharRNN(RNNConfig(vocab_size=len(vocab), embedding_size=8, hidden_size=16))
    return {
        "t5": build_tiny_t5(root / "t5"),
        "bart": build_tiny_bart(root / "bart"),
        "marian": build_tiny_marian(root / "marian", "en", "de"),
        "vit": build_tiny_vit(root / "vit"),
        "bert": build_tiny_bert(root / "bert"),
        "rnn": save_rnn_folder(root / "rnn", rnn.eval(), vocab),
    }


def entry(name: str, task: str, source: Path | str, **fields: Any) -> ModelEntry:
    return ModelEntry.objects.create(
        name=name, task=task, source=str(source), queue=DIRECT_QUEUE, **fields
    )


def run(
    user: Any, model: ModelEntry, task: str, input: dict[str, Any], **params: Any
) -> Generation:
    generation = services.create_generation(
        user=user, model=model, task=task, input=input, params=params
    )
    assert run_next(DIRECT_QUEUE) == generation.pk
    generation.refresh_from_db()
    return generation


def streamed(generation: Generation) -> tuple[str, dict[str, Any]]:
    """The text the generation's stream carried, and its done event."""
    events = streams.read_all(generation.pk)
    text = "".join(e["text"] for e in events if e["type"] == "token")
    [done] = [e for e in events if e["type"] == "done"]
    return text, dict(done)


LONG_TEXT = " ".join(
    f"Paragraph {i} says the river rose by {i} centimetres on day {i}." for i in range(60)
)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_a_summary_streams_from_a_seq2seq_model(
    alice: Any, folders: dict[str, Path], family: str
) -> None:
    model = entry(f"tiny-{family}", "summarize", folders[family])
    generation = run(alice, model, "summarize", {"text": LONG_TEXT, "length": "short"})
    assert generation.status == Status.DONE, generation.error
    text, done = streamed(generation)
    assert generation.output == text and text
    assert done["status"] == "done" and done["result"]["length"] == "short"
    assert generation.result["model_calls"] >= 1  # type: ignore[index]
    assert generation.completion_tokens > 0 and generation.first_token_at is not None


def test_a_long_text_is_summarized_map_reduce_by_a_chat_model(
    alice: Any, endless_llama_dir: Path
) -> None:
    model = entry("tiny-llama-summarizer", "summarize", endless_llama_dir)
    generation = run(alice, model, "summarize", {"text": LONG_TEXT * 4, "length": "short"})
    assert generation.status == Status.DONE, generation.error
    assert generation.result["model_calls"] > 1  # type: ignore[index]  # map steps, then the final
    assert generation.output == streamed(generation)[0] != ""


def test_a_translation_streams_and_records_the_detected_language(
    alice: Any, folders: dict[str, Path]
) -> None:
    model = entry("tiny-marian", "translate", folders["marian"])
    text = "The weather is lovely today and we are going for a long walk by the sea."
    generation = run(alice, model, "translate", {"text": text, "target": "de"})
    assert generation.status == Status.DONE, generation.error
    assert generation.result == {"source": "en", "target": "de", "detected": True}
    assert generation.output == streamed(generation)[0] != ""


def test_an_unsupported_pair_fails_with_the_pairs_the_model_supports(
    alice: Any, folders: dict[str, Path]
) -> None:
    model = entry("tiny-marian", "translate", folders["marian"])
    generation = run(alice, model, "translate", {"text": "Bonjour", "source": "fr", "target": "de"})
    assert generation.status == Status.FAILED
    assert "en" in generation.error and "de" in generation.error
    assert streamed(generation)[1]["error"] == generation.error


def png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_uploaded_image_gets_its_top_labels(alice: Any, folders: dict[str, Path]) -> None:
    model = entry("tiny-vit", "classify_image", folders["vit"])
    path = uploads.save_image(alice.pk, png())
    generation = run(alice, model, "classify_image", {"image": path, "top_k": 3})
    assert generation.status == Status.DONE, generation.error
    labels = generation.result["labels"]  # type: ignore[index]
    assert len(labels) == 3 and {item["label"] for item in labels} <= set(IMAGE_LABELS)
    scores = [item["score"] for item in labels]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert streamed(generation)[1]["result"] == generation.result
    assert generation.output.splitlines()[0].startswith(labels[0]["label"] + ": ")
    assert generation.images == 1 and generation.prompt_tokens == 0  # its usage: one image


def test_image_inputs_that_cannot_be_used_fail_clearly(
    alice: Any, folders: dict[str, Path]
) -> None:
    model = entry("tiny-vit", "classify_image", folders["vit"])
    with pytest.raises(uploads.UploadError, match="not an image"):
        uploads.save_image(alice.pk, b"%PDF-1.7 not an image")
    outside = run(alice, model, "classify_image", {"image": "../../etc/passwd"})
    assert outside.status == Status.FAILED and "path is not valid" in outside.error
    gone = run(alice, model, "classify_image", {"image": f"{alice.pk}/missing.png"})
    assert gone.status == Status.FAILED and "no longer there" in gone.error
    path = uploads.save_image(alice.pk, png()[:60])  # a truncated PNG
    truncated = run(alice, model, "classify_image", {"image": path})
    assert truncated.status == Status.FAILED and "image" in truncated.error.lower()
    too_many = run(alice, model, "classify_image", {"image": path, "top_k": 500})
    assert too_many.status == Status.FAILED and "top_k" in too_many.error


def test_embeddings_are_stored_as_the_result(alice: Any, folders: dict[str, Path]) -> None:
    model = entry("tiny-bert", "embed", folders["bert"])
    generation = run(alice, model, "embed", {"texts": ["a cat", "a dog", "a cat"]})
    assert generation.status == Status.DONE, generation.error
    vectors = generation.result["embeddings"]  # type: ignore[index]
    assert len(vectors) == 3 and vectors[0] == pytest.approx(vectors[2])
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)  # L2-normalised
    # Its usage: the tokens the model read, as its tokenizer counts them.
    tokenizer = AutoTokenizer.from_pretrained(folders["bert"])
    read = sum(len(tokenizer(text)["input_ids"]) for text in ["a cat", "a dog", "a cat"])
    assert generation.prompt_tokens == read > 0 and generation.completion_tokens == 0


def test_the_rnn_answers_in_chat_by_continuing_the_message(
    alice: Any, folders: dict[str, Path]
) -> None:
    model = entry("tiny-rnn", "chat", folders["rnn"], backend="rnn", quantization="int8_dynamic")
    messages = [{"role": "user", "content": "To be, or not"}]
    generation = run(
        alice, model, "chat", {"system": "", "messages": messages},
        **SamplingParams(temperature=0.8, max_new_tokens=24, seed=3).to_dict(),
    )  # fmt: skip
    assert generation.status == Status.DONE, generation.error
    assert len(generation.output) == 24 and generation.finish_reason == "length"
    assert generation.output == streamed(generation)[0]
    assert set(generation.output) <= set("To be, or not to be: that is the question.\n")


def test_an_rnn_cannot_summarize_and_says_so(alice: Any, folders: dict[str, Path]) -> None:
    model = entry("tiny-rnn-summary", "summarize", folders["rnn"], backend="rnn")
    generation = run(alice, model, "summarize", {"text": LONG_TEXT})
    assert generation.status == Status.FAILED
    assert "'tiny-rnn-summary' is a character-level RNN, which cannot summarize" in generation.error


def test_entries_with_the_same_weights_share_one_loaded_model(
    alice: Any, chat_model: ModelEntry
) -> None:
    summarizer = entry("tiny-llama-as-summarizer", "summarize", chat_model.source)
    first = model_cache.get_model(chat_model)
    second = model_cache.get_model(summarizer)
    assert second.model is first.model  # loaded once
    assert (first.spec.name, second.spec.name) == ("tiny-llama", "tiny-llama-as-summarizer")
    summarizer.quantization = "int8_dynamic"
    summarizer.save()
    assert model_cache.get_model(summarizer).model is not first.model  # loaded its own way


def test_what_a_worker_holds_is_read_while_a_model_loads(
    chat_model: ModelEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat reports the held models every beat: a load (minutes for a large
    model) must not hold it up, or the worker looks dead while it loads and its running
    replies are requeued. The real load, kept open until the reads are done."""
    loading, finish = threading.Event(), threading.Event()
    real_load = model_cache._load

    def held_open(spec: Any) -> Any:
        loading.set()
        finish.wait(30)
        return real_load(spec)

    monkeypatch.setattr(model_cache, "_load", held_open)
    loader = threading.Thread(target=model_cache.get_model, args=(chat_model,))
    loader.start()
    try:
        assert loading.wait(10)
        read = threading.Thread(target=lambda: (model_cache.held(), model_cache.peek(chat_model)))
        read.start()
        read.join(timeout=5)
        assert not read.is_alive(), "reading what the worker holds waited for the load"
        assert model_cache.held() == [] and model_cache.peek(chat_model) is None
    finally:
        finish.set()
        loader.join(timeout=30)
    assert [loaded.spec.name for loaded in model_cache.held()] == ["tiny-llama"]
    assert model_cache.get_model(chat_model).model is model_cache.held()[0].model  # once


def test_bad_task_input_fails_the_generation_with_a_clear_message(
    alice: Any, folders: dict[str, Path]
) -> None:
    model = entry("tiny-bart", "summarize", folders["bart"])
    generation = run(alice, model, "summarize", {"text": LONG_TEXT, "length": "epic"})
    assert generation.status == Status.FAILED
    assert generation.error == "length must be one of short, medium, long, not 'epic'"
    empty = run(alice, model, "summarize", {"text": "   "})
    assert empty.status == Status.FAILED and empty.error == "there is no text to summarize"


def test_out_of_memory_fails_the_request_and_empties_the_model_cache(
    alice: Any, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = entry("tiny-bert-oom", "embed", folders["bert"])
    before = model_cache.get_model(model)

    def exhausted(*args: Any) -> handlers.Outcome:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setitem(handlers.HANDLERS, "embed", exhausted)
    generation = run(alice, model, "embed", {"texts": ["a cat"]})
    assert generation.status == Status.FAILED and generation.finish_reason == "error"
    assert generation.error.startswith("model 'tiny-bert-oom' ran out of memory on this request")
    assert streamed(generation)[1]["error"] == generation.error
    assert model_cache.get_model(model).model is not before.model  # the cache was emptied
    monkeypatch.undo()
    assert run(alice, model, "embed", {"texts": ["a cat"]}).status == Status.DONE  # serving on


def test_the_steps_run_one_by_one_and_a_requeued_run_records_nothing(
    alice: Any, folders: dict[str, Path]
) -> None:
    """The steps as an engine calls them, each on its own. A run whose worker was taken for
    dead while it generated (its generation requeued) stores no outcome and ends no stream:
    the generation's next run owns both."""
    model = entry("tiny-bert-steps", "embed", folders["bert"])
    generation = services.create_generation(
        user=alice, model=model, task="embed", input={"texts": ["a cat"]}, params={}
    )
    claimed = runner.claim(DIRECT_QUEUE)
    assert claimed is not None and claimed.generation_id == generation.pk
    assert runner.start(claimed) and runner.model_available(claimed) and runner.screen(claimed)
    loaded = runner.load(claimed)
    assert loaded is not None
    outcome = runner.generate(claimed, loaded)
    assert outcome is not None and outcome.result is not None
    assert services.recover_orphan(generation.pk, heartbeat.WORKER_NAME) == "requeued"
    runner.record(claimed, outcome)
    generation.refresh_from_db()
    assert generation.status == Status.QUEUED and generation.result is None
    assert [e["type"] for e in streams.read_all(generation.pk)] == ["status", "status"]


def test_a_completion_continues_its_prompt_without_the_chat_template(
    alice: Any, chat_model: ModelEntry
) -> None:
    from generation.streaming import TokenStream

    prompt = "Once upon a time there was"
    generation = run(
        alice, chat_model, "chat", {"prompt": prompt}, temperature=0.0, max_new_tokens=12
    )
    assert generation.status == Status.DONE, generation.error
    loaded = model_cache.get_model(chat_model)
    ids = list(loaded.tokenizer(prompt)["input_ids"])
    alone = TokenStream(loaded, ids, SamplingParams(temperature=0.0, max_new_tokens=12))  # type: ignore[arg-type]
    alone.run(lambda piece: None)
    assert generation.output == alone.text
    assert generation.prompt_tokens == len(ids)  # the prompt's own tokens, no template
