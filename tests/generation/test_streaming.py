"""TokenStream: streamed text, stats, seeds, the stop flag, stop sequences and the thread."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from generation.loading import LoadedModel
from generation.prompts import build_chat_input
from generation.specs import SamplingParams
from generation.streaming import TokenStream, _held_back
from tests.tiny.causal import CORPUS

LoadTiny = Callable[..., LoadedModel]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


def chat_prompt(loaded: LoadedModel, text: str = "Hello! How can I help you today?") -> list[int]:
    return build_chat_input(
        loaded.tokenizer,
        [{"role": "user", "content": text}],
        system="You are a helpful assistant.",
        max_prompt_tokens=400,
    )


def text_prompt(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text)["input_ids"])


def hf_greedy_text(loaded: LoadedModel, prompt_ids: list[int], max_new_tokens: int) -> str:
    """What transformers' own generate() produces greedily, decoded like the stream."""
    input_ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    return str(loaded.tokenizer.decode(output[0][len(prompt_ids) :], skip_special_tokens=True))


def run(
    loaded: LoadedModel, prompt_ids: list[int], params: SamplingParams, **kwargs: object
) -> tuple[list[str], TokenStream]:
    stream = TokenStream(loaded, prompt_ids, params, **kwargs)  # type: ignore[arg-type]
    return list(stream), stream


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]


# -- plain greedy streaming ---------------------------------------------------------------


@pytest.mark.parametrize("max_new_tokens", [1, 10, 40])
def test_greedy_stream_equals_transformers_generate(tiny: LoadedModel, max_new_tokens: int) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    pieces, stream = run(tiny, prompt, params)
    expected = hf_greedy_text(tiny, prompt, max_new_tokens)
    assert "".join(pieces) == expected
    assert stream.text == expected
    assert all(isinstance(piece, str) and piece for piece in pieces)


def test_greedy_stream_stats(tiny: LoadedModel) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    pieces, stream = run(tiny, prompt, params)
    stats = stream.stats
    assert stats.prompt_tokens == len(prompt)
    assert 1 <= stats.completion_tokens <= params.max_new_tokens
    assert stats.finish_reason in ("length", "eos")
    if stats.finish_reason == "length":
        assert stats.completion_tokens == params.max_new_tokens
    assert stats.first_token_seconds is not None
    assert 0 < stats.first_token_seconds <= stats.total_seconds
    assert len(pieces) > 1


def test_stream_finish_reason_is_eos_when_the_model_emits_its_eos_token(
    load_tiny: LoadTiny,
) -> None:
    loaded = load_tiny("llama")  # a private copy: its generation config is changed below
    prompt = chat_prompt(loaded)
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        first = int(loaded.model(input_ids).logits[0, -1].argmax())
    # Make the token the model greedily produces first its end-of-sequence token.
    loaded.model.generation_config.eos_token_id = first
    _, stream = run(loaded, prompt, SamplingParams(temperature=0.0, max_new_tokens=20))
    assert stream.stats.finish_reason == "eos"
    assert stream.stats.completion_tokens == 1


def test_stream_raises_generate_errors_in_the_consumer_and_joins_the_thread(
    llama: LoadedModel,
) -> None:
    bad_prompt = [len(llama.tokenizer) + 1000]  # no such token: the embedding lookup fails
    stream = TokenStream(llama, bad_prompt, GREEDY)
    with pytest.raises(IndexError):
        list(stream)
    assert generate_threads() == []


# -- seeds ---------------------------------------------------------------------------------


def sampled_text(loaded: LoadedModel, seed: int, max_new_tokens: int = 20) -> str:
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed)
    pieces, _ = run(loaded, chat_prompt(loaded), params)
    return "".join(pieces)


@pytest.mark.parametrize("seed", [0, 7])
def test_sampled_stream_equals_seeded_transformers_generate(tiny: LoadedModel, seed: int) -> None:
    # Sampled output of a random model is full of byte fragments (split multi-byte
    # characters), which exercises the stream's incremental decoding hardest.
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=40, seed=seed)
    streamed = sampled_text(tiny, seed=seed, max_new_tokens=40)
    torch.manual_seed(seed)
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = tiny.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=tiny.tokenizer.pad_token_id,
        )
    expected = tiny.tokenizer.decode(output[0][len(prompt) :], skip_special_tokens=True)
    assert streamed == expected


def test_same_seed_gives_the_same_sampled_text(tiny: LoadedModel) -> None:
    first = sampled_text(tiny, seed=1234)
    torch.manual_seed(999)  # disturb the global generator in between
    second = sampled_text(tiny, seed=1234)
    assert first == second
    assert first  # something was sampled


def test_different_seeds_give_different_sampled_text(tiny: LoadedModel) -> None:
    texts = {seed: sampled_text(tiny, seed=seed) for seed in (1, 2, 3)}
    assert len(set(texts.values())) == 3, texts


# -- the stop flag -------------------------------------------------------------------------


class StopAfter:
    """A should_stop callable that answers True from its (calls + 1)-th call on."""

    def __init__(self, calls: int) -> None:
        self.allowed = calls
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.allowed


@pytest.mark.parametrize("allowed_calls", [1, 3, 8])
def test_should_stop_ends_generation_promptly(tiny: LoadedModel, allowed_calls: int) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0.0, max_new_tokens=200)
    should_stop = StopAfter(allowed_calls)
    pieces, stream = run(tiny, prompt, params, should_stop=should_stop)
    # should_stop is polled once per decoding step, after the step's token: so exactly one
    # more token than the number of calls that said "go on".
    assert stream.stats.completion_tokens == allowed_calls + 1
    assert stream.stats.finish_reason == "stopped"
    assert should_stop.calls == allowed_calls + 1
    # What was streamed is the beginning of the unstopped greedy text.
    full = hf_greedy_text(tiny, prompt, allowed_calls + 1)
    assert "".join(pieces) == full == stream.text


def test_should_stop_true_from_the_start_yields_at_most_one_token(tiny: LoadedModel) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0.0, max_new_tokens=200)
    pieces, stream = run(tiny, prompt, params, should_stop=lambda: True)
    assert stream.stats.completion_tokens <= 1
    assert stream.stats.finish_reason == "stopped"
    assert "".join(pieces) == hf_greedy_text(tiny, prompt, 1)


# -- stop sequences ------------------------------------------------------------------------


def pick_stop(text: str) -> str | None:
    """A two-character printable ASCII substring whose first occurrence is at index >= 3."""
    for start in range(3, len(text) - 1):
        candidate = text[start : start + 2]
        if (
            candidate.isascii()
            and candidate.isprintable()
            and candidate.strip()
            and text.find(candidate) == start
        ):
            return candidate
    return None


def candidate_prompts() -> Iterator[str]:
    yield from CORPUS
    words = " ".join(CORPUS).split()
    rnd = random.Random(0)
    for _ in range(60):
        yield " ".join(rnd.sample(words, 6))


StopCase = tuple[list[int], SamplingParams, str, str]
_stop_cases: dict[str, StopCase] = {}


def find_stop_case(loaded: LoadedModel) -> StopCase:
    """A prompt and parameters whose output contains a usable stop sequence (cached).

    Tiny random models tend to repeat one token greedily, so several prompts are tried; if
    no greedy output has one, seeded sampling (deterministic for a fixed seed) is used.
    """
    if loaded.spec.name not in _stop_cases:
        _stop_cases[loaded.spec.name] = _search_stop_case(loaded)
    return _stop_cases[loaded.spec.name]


def _search_stop_case(loaded: LoadedModel) -> StopCase:
    for text in candidate_prompts():
        prompt = text_prompt(loaded, text)
        params = SamplingParams(temperature=0.0, max_new_tokens=30)
        output = "".join(TokenStream(loaded, prompt, params))
        stop = pick_stop(output)
        if stop:
            return prompt, params, output, stop
    prompt = chat_prompt(loaded)
    for seed in range(50):
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=30, seed=seed)
        output = "".join(TokenStream(loaded, prompt, params))
        stop = pick_stop(output)
        if stop:
            return prompt, params, output, stop
    pytest.fail("found no output with a usable stop sequence")


def test_stop_sequence_cuts_the_output_before_its_first_occurrence(tiny: LoadedModel) -> None:
    prompt, params, full, stop = find_stop_case(tiny)
    cut = full.index(stop)
    assert cut >= 3
    with_stop = SamplingParams(**{**params.to_dict(), "stop": (stop,)})
    pieces, stream = run(tiny, prompt, with_stop)
    joined = "".join(pieces)
    assert joined == full[:cut]
    assert stream.text == full[:cut]
    assert stream.stats.finish_reason == "stop_sequence"
    assert stop not in joined
    assert all(stop not in piece for piece in pieces)
    assert stream.stats.completion_tokens <= with_stop.max_new_tokens


def test_earliest_of_several_stop_sequences_wins(tiny: LoadedModel) -> None:
    prompt, params, full, stop = find_stop_case(tiny)
    cut = full.index(stop)
    # Another stop that first occurs after `cut`, listed before the earliest one.
    later = next(
        (
            full[i : i + 2]
            for i in range(cut + 1, len(full) - 1)
            if full.find(full[i : i + 2]) > cut
        ),
        None,
    )
    stops = ("never-in-output-§", later, stop) if later else ("never-in-output-§", stop)
    with_stops = SamplingParams(**{**params.to_dict(), "stop": stops})
    pieces, stream = run(tiny, prompt, with_stops)
    assert "".join(pieces) == full[:cut]
    assert stream.stats.finish_reason == "stop_sequence"


def test_text_held_back_for_a_stop_sequence_that_never_comes_is_flushed(
    tiny: LoadedModel,
) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0.0, max_new_tokens=15)
    full = "".join(TokenStream(tiny, prompt, params))
    assert full
    # A stop that starts with the output's last character and then diverges: the tail is
    # held back until generation ends, and must then be sent.
    stop = full[-1] + "\x00§never"
    pieces, stream = run(tiny, prompt, SamplingParams(**{**params.to_dict(), "stop": (stop,)}))
    assert "".join(pieces) == full
    assert stream.text == full
    assert stream.stats.finish_reason in ("length", "eos")


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("abc<|", ("<|end",), 2),
        ("abc<", ("<|end",), 1),
        ("abc<|en", ("<|end",), 4),
        ("abc", ("<|end",), 0),
        ("abc<|end", ("<|end",), 0),  # a whole stop is found by the caller, not held back
        ("abc", (), 0),
        ("", ("<|end",), 0),
        ("<|", ("<|end",), 2),
        ("xab", ("abz", "bq"), 2),  # the longest partial match of all stops
        ("xab", ("bq", "abz"), 2),
        ("abc\ufffd", (), 1),  # a multi-byte character split across tokens
        ("abc\ufffd", ("<|end",), 1),
        ("\ufffd", ("\ufffdxyz",), 1),
        ("ab\ufffd", ("b\ufffdq",), 2),
        ("\ufffdabc", (), 0),
    ],
)
def test_held_back_counts_possible_stop_prefixes_and_split_characters(
    text: str, stops: tuple[str, ...], held: int
) -> None:
    assert _held_back(text, stops) == held


# -- the background thread -----------------------------------------------------------------


def test_breaking_out_early_ends_the_generate_thread(llama: LoadedModel) -> None:
    before = threading.active_count()
    params = SamplingParams(temperature=0.0, max_new_tokens=4000)
    stream = TokenStream(llama, chat_prompt(llama), params)
    started = time.perf_counter()
    received = []
    for piece in stream:
        received.append(piece)
        if len(received) == 2:
            break
    elapsed = time.perf_counter() - started
    assert received
    assert generate_threads() == []
    assert threading.active_count() == before
    assert stream.stats.completion_tokens < params.max_new_tokens
    assert elapsed < 5  # 4000 tokens would take far longer: generate() was stopped


def test_closing_the_iterator_ends_the_generate_thread(llama: LoadedModel) -> None:
    before = threading.active_count()
    iterator = iter(TokenStream(llama, chat_prompt(llama), SamplingParams(max_new_tokens=4000)))
    assert isinstance(next(iterator), str)
    assert len(generate_threads()) <= 1
    iterator.close()  # type: ignore[attr-defined]
    assert generate_threads() == []
    assert threading.active_count() == before


def test_a_finished_stream_leaves_no_thread_behind(llama: LoadedModel) -> None:
    before = threading.active_count()
    run(llama, chat_prompt(llama), GREEDY)
    assert generate_threads() == []
    assert threading.active_count() == before


def test_run_calls_back_in_the_calling_thread_with_the_same_text_as_iteration(
    tiny: LoadedModel,
) -> None:
    prompt = chat_prompt(tiny)
    params = SamplingParams(temperature=0, max_new_tokens=24)
    threads_seen: set[int] = set()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        threads_seen.add(threading.get_ident())
        pieces.append(piece)

    before = threading.active_count()
    stream = TokenStream(tiny, prompt, params)
    stats = stream.run(on_text)
    assert threads_seen == {threading.get_ident()}  # no second thread on the fast path
    assert threading.active_count() == before
    assert "".join(pieces) == stream.text == "".join(TokenStream(tiny, prompt, params))
    assert stats.completion_tokens <= 24 and stats.finish_reason in ("eos", "length")


def test_nul_characters_never_leave_the_stream(tiny: LoadedModel) -> None:
    # Databases such as PostgreSQL refuse NUL in text; a model can still emit its byte.
    from generation.streaming import _decode

    ids = tiny.tokenizer.encode("a\x00b", add_special_tokens=False)
    assert "\x00" in tiny.tokenizer.decode(ids)
    assert _decode(tiny.tokenizer, ids) == "ab"
