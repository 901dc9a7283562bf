"""Summaries: sentence chunking by tokens, map-reduce over long inputs, presets, streaming,
and the chat-model path."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from generation.loading import LoadedModel, load_seq2seq_lm
from generation.specs import GenerationError, ModelSpec, SamplingParams, Task
from generation.summarize import (
    LENGTH_PRESETS,
    SummaryLength,
    SummaryProgress,
    SummaryStream,
    chunk_text,
    count_tokens,
    split_sentences,
    summarization_prefix,
)
from tests.tiny.models import build_tiny_bart, build_tiny_t5

STORY = [
    "Atelier is a self-hosted studio for language models.",
    "People chat, summarize and translate in the browser.",
    "Workers hold the models and stream tokens back over WebSockets!",
    "Does a long text fit into one model call?",
    "Often it does not, so the text is split into chunks at sentence boundaries.",
    "Each chunk is summarized, then the summaries are summarized again.",
]


def long_text(sentences: int) -> str:
    return " ".join(STORY[i % len(STORY)] + f" Part {i}." for i in range(sentences))


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = build_tiny_t5(tmp_path_factory.mktemp("sum-t5"))
    return load_seq2seq_lm(ModelSpec(name="tiny-t5", source=str(folder), task=Task.SUMMARIZE))


@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = build_tiny_bart(tmp_path_factory.mktemp("sum-bart"))
    return load_seq2seq_lm(ModelSpec(name="tiny-bart", source=str(folder), task=Task.SUMMARIZE))


@contextmanager
def counting_generate(loaded: LoadedModel) -> Iterator[list[dict[str, Any]]]:
    """Record the arguments of each call of the model's real generate(), then restore it.
    (test_translate uses it too.)"""
    calls: list[dict[str, Any]] = []
    real = loaded.model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    loaded.model.generate = generate
    try:
        yield calls
    finally:
        del loaded.model.generate  # back to the class's method


# -- sentences and chunks ----------------------------------------------------------------------


def test_split_sentences_at_ends_of_sentences_and_lines() -> None:
    text = 'One. Two? "Three!" Four…  Five\nSix 東京です。はい。 Seven (eight.) nine'
    assert split_sentences(text) == [
        "One.",
        "Two?",
        '"Three!"',
        "Four…",
        "Five",
        "Six 東京です。",
        "はい。",
        "Seven (eight.)",
        "nine",
    ]
    assert split_sentences("   ") == []
    assert split_sentences("3.14 is pi. e.g. this") == ["3.14 is pi.", "e.g.", "this"]


@pytest.mark.parametrize("max_tokens", [50, 80, 200])
def test_chunks_fit_the_budget_and_break_between_sentences(
    t5: LoadedModel, max_tokens: int
) -> None:
    text = long_text(40)
    sentences = split_sentences(text)
    assert max(count_tokens(t5.tokenizer, s) for s in sentences) < 50  # none is cut
    chunks = chunk_text(text, t5.tokenizer, max_tokens)
    assert all(count_tokens(t5.tokenizer, chunk) <= max_tokens for chunk in chunks)
    # Every chunk is whole sentences, and together they are the text in order.
    regrouped = [split_sentences(chunk) for chunk in chunks]
    assert [s for group in regrouped for s in group] == sentences

    # Greedy packing: by the packer's estimate (each sentence's tokens plus one for the
    # join), a chunk plus the next chunk's first sentence would not have fit.
    def estimate(group: list[str]) -> int:
        return sum(count_tokens(t5.tokenizer, s) + 1 for s in group)

    for group, following in itertools.pairwise(regrouped):
        assert estimate([*group, following[0]]) > max_tokens


def test_chunk_count_grows_with_the_text(t5: LoadedModel) -> None:
    counts = [len(chunk_text(long_text(n), t5.tokenizer, 60)) for n in (5, 20, 80)]
    assert counts[0] < counts[1] < counts[2]
    assert chunk_text("", t5.tokenizer, 60) == []
    assert chunk_text("One short sentence.", t5.tokenizer, 60) == ["One short sentence."]


def test_a_sentence_longer_than_a_chunk_is_split_between_words(t5: LoadedModel) -> None:
    sentence = " ".join(["word"] * 120) + "."
    chunks = chunk_text(sentence, t5.tokenizer, 25)
    assert len(chunks) > 1
    assert all(count_tokens(t5.tokenizer, c) <= 25 for c in chunks)
    assert " ".join(chunks).split() == sentence.split()
    # Text without spaces (e.g. Chinese) is split between characters.
    unspaced = "字" * 300
    pieces = chunk_text(unspaced, t5.tokenizer, 25)
    assert "".join(pieces) == unspaced
    assert all(count_tokens(t5.tokenizer, p) <= 25 for p in pieces)


def test_chunk_budget_must_be_positive(t5: LoadedModel) -> None:
    with pytest.raises(ValueError, match="positive"):
        chunk_text("Hello.", t5.tokenizer, 0)


# -- prefixes and presets ----------------------------------------------------------------------


def test_t5_gets_the_summarize_prefix_from_its_config_bart_gets_none(
    t5: LoadedModel, bart: LoadedModel
) -> None:
    assert summarization_prefix(t5.model.config) == "summarize: "
    assert summarization_prefix(bart.model.config) == ""

    class BareT5Config:  # a T5 config without task_specific_params
        model_type = "t5"
        task_specific_params = None

    class CustomPrefix:
        model_type = "bart"
        task_specific_params = {"summarization": {"prefix": "tl;dr: "}}

    assert summarization_prefix(BareT5Config()) == "summarize: "
    assert summarization_prefix(CustomPrefix()) == "tl;dr: "


def test_the_prefix_reaches_the_encoder(t5: LoadedModel) -> None:
    with counting_generate(t5) as calls:
        SummaryStream(t5, "Paris is the capital of France.", length="short")()
    assert len(calls) == 1
    encoder_input = t5.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=True)
    assert encoder_input.startswith("summarize: Paris")


@pytest.mark.parametrize("length", list(SummaryLength))
def test_presets_set_the_final_token_budget(bart: LoadedModel, length: SummaryLength) -> None:
    summary = SummaryStream(bart, STORY[0], length=length, params=SamplingParams(temperature=0))
    with counting_generate(bart) as calls:
        summary()
    budget = LENGTH_PRESETS[length].max_new_tokens
    assert [call["max_new_tokens"] for call in calls] == [budget]
    assert 1 <= summary.stats.completion_tokens <= budget


def test_preset_budgets_grow_and_unknown_presets_are_refused(bart: LoadedModel) -> None:
    budgets = [LENGTH_PRESETS[length].max_new_tokens for length in SummaryLength]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3
    with pytest.raises(ValueError, match="tiny"):
        SummaryStream(bart, "text", length="tiny")


# -- map-reduce --------------------------------------------------------------------------------


def test_a_short_text_is_summarized_in_one_streamed_call(t5: LoadedModel) -> None:
    pieces: list[str] = []
    progress: list[SummaryProgress] = []
    summary = SummaryStream(
        t5,
        long_text(3),
        length="short",
        params=SamplingParams(temperature=0),
        on_progress=progress.append,
    )
    stats = summary.run(pieces.append)
    assert summary.calls == 1
    assert progress == []
    assert "".join(pieces) == summary.text
    assert summary.text.strip()
    assert stats.first_token_seconds is not None
    assert stats.finish_reason in ("eos", "length")


def test_map_reduce_of_a_long_input(t5: LoadedModel) -> None:
    text = long_text(30)
    chunk_tokens = 80
    first_level = len(chunk_text(text, t5.tokenizer, chunk_tokens))
    assert first_level >= 5
    progress: list[SummaryProgress] = []
    pieces: list[str] = []
    summary = SummaryStream(
        t5,
        text,
        length="medium",
        params=SamplingParams(temperature=0),
        on_progress=progress.append,
        chunk_tokens=chunk_tokens,
    )
    with counting_generate(t5) as calls:
        summary.run(pieces.append)

    # Level 1 summarizes every chunk of the input, in order, with progress after each.
    level_one = [p for p in progress if p.level == 1]
    assert [p.done for p in level_one] == list(range(1, first_level + 1))
    assert {p.total for p in level_one} == {first_level}
    # Each further level has fewer chunks than the one before, down to one final call.
    totals = [
        next(p.total for p in progress if p.level == level)
        for level in sorted({p.level for p in progress})
    ]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    assert len(calls) == summary.calls == len(progress) + 1
    # Map steps are greedy and short (a quarter of a chunk); the final one has the preset.
    assert all(call["max_new_tokens"] == chunk_tokens // 4 for call in calls[:-1])
    assert all(call["do_sample"] is False for call in calls[:-1])
    # A model's own minimum summary length (bart-large-cnn: 56) yields to a map budget.
    assert all(call["min_length"] == 0 for call in calls[:-1])
    assert "min_length" not in calls[-1]
    assert calls[-1]["max_new_tokens"] == LENGTH_PRESETS[SummaryLength.MEDIUM].max_new_tokens
    # Only the final step streamed; the stats count every call.
    assert "".join(pieces) == summary.text
    assert summary.stats.prompt_tokens == sum(int(c["input_ids"].shape[1]) for c in calls)


def test_map_reduce_recurses_until_the_summaries_fit(bart: LoadedModel) -> None:
    progress: list[SummaryProgress] = []
    summary = SummaryStream(
        bart, long_text(40), length="short", on_progress=progress.append, chunk_tokens=40
    )
    with counting_generate(bart) as calls:
        summary()
    levels = sorted({p.level for p in progress})
    assert len(levels) >= 2  # summaries of summaries were needed
    assert levels == list(range(1, len(levels) + 1))
    assert len(calls) == len(progress) + 1


def test_stopping_during_the_map_steps_ends_without_a_final_call(t5: LoadedModel) -> None:
    with counting_generate(t5) as calls:
        pieces: list[str] = []
        summary = SummaryStream(
            t5, long_text(30), should_stop=lambda: len(calls) >= 2, chunk_tokens=80
        )
        stats = summary.run(pieces.append)
    assert stats.finish_reason == "stopped"
    assert pieces == []
    assert len(calls) == 2  # the second map step saw the stop; nothing ran after it
    assert len(chunk_text(long_text(30), t5.tokenizer, 80)) > 2


def test_a_model_with_too_little_context_is_refused(t5: LoadedModel) -> None:
    with pytest.raises(GenerationError, match="too little context"):
        SummaryStream(t5, "text", chunk_tokens=10)


def test_empty_text_is_refused(t5: LoadedModel) -> None:
    with pytest.raises(GenerationError, match="no text to summarize"):
        SummaryStream(t5, " \n\t ")


# -- chat models -------------------------------------------------------------------------------


def test_chat_model_summarizes_through_a_prompt(llama: LoadedModel) -> None:
    pieces: list[str] = []
    summary = SummaryStream(
        llama, long_text(4), length="short", params=SamplingParams(temperature=0)
    )
    with counting_generate(llama) as calls:
        summary.run(pieces.append)
    assert len(calls) == 1
    prompt = llama.tokenizer.decode(calls[0]["input_ids"][0])
    assert "<|im_start|>system\nYou summarize texts." in prompt
    assert "Summarize this text in one or two sentences:" in prompt
    assert STORY[0] in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "".join(pieces) == summary.text
    assert summary.stats.completion_tokens <= LENGTH_PRESETS[SummaryLength.SHORT].max_new_tokens


def test_chat_model_map_reduce(llama: LoadedModel) -> None:
    progress: list[SummaryProgress] = []
    summary = SummaryStream(llama, long_text(30), on_progress=progress.append, chunk_tokens=100)
    with counting_generate(llama) as calls:
        summary()
    assert progress and progress[0].total > 1
    assert len(calls) == len(progress) + 1
    map_prompt = llama.tokenizer.decode(calls[0]["input_ids"][0])
    assert "Summarize this part of a longer text briefly:" in map_prompt


def test_chat_model_without_a_template_is_refused(load_tiny: Any, tmp_path: Path) -> None:
    loaded = load_tiny("gpt2")
    loaded.tokenizer.chat_template = None
    with pytest.raises(GenerationError, match="no chat template"):
        SummaryStream(loaded, "Some text.")
