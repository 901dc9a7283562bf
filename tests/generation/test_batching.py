"""The continuous batching engine on tiny real models: rows in a batch give what each gives
alone, join and leave mid-flight, and keep their own sampling, stops and limits."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from generation.batching import BatchedStream, Batcher, BatchOutOfMemory, can_batch, open_stream
from generation.loading import LoadedModel
from generation.specs import SamplingParams
from generation.streaming import StreamStats, TokenStream

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)
TEXTS = [
    "Hello there, how are you",
    "The quick brown fox jumps",
    "Once upon a time in a land far away there lived a",
    "a",
    "What is the capital of France? Tell me the answer please.",
]


def prompts(loaded: LoadedModel) -> list[list[int]]:
    return [list(loaded.tokenizer(text)["input_ids"]) for text in TEXTS]


def alone(loaded: LoadedModel, prompt: list[int], params: SamplingParams) -> tuple[str, Any]:
    """The request by itself, through transformers' generate()."""
    stream = TokenStream(loaded, prompt, params)
    stats = stream.run(lambda piece: None)
    return stream.text, (stats.finish_reason, stats.completion_tokens)


class Request:
    """A BatchedStream run on a thread of its own, as a worker's generation thread would."""

    def __init__(
        self,
        batcher: Batcher,
        prompt: list[int],
        params: SamplingParams,
        should_stop: Any = lambda: False,
    ) -> None:
        self.stream = BatchedStream(batcher, prompt, params, should_stop)
        self.pieces: list[str] = []
        self.arrivals: list[float] = []
        self.stats: StreamStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.stream.run(self._piece)
        except BaseException as exc:
            self.error = exc

    def _piece(self, piece: str) -> None:
        self.pieces.append(piece)
        self.arrivals.append(time.monotonic())

    def start(self) -> Request:
        self.thread.start()
        return self

    def wait(self) -> Request:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the request never ended"
        return self

    @property
    def result(self) -> tuple[str, Any]:
        assert self.stats is not None, self.error
        return self.stream.text, (self.stats.finish_reason, self.stats.completion_tokens)


def run_together(batcher: Batcher, requests: list[tuple[list[int], SamplingParams]]) -> list[Any]:
    started = [Request(batcher, prompt, params).start() for prompt, params in requests]
    return [request.wait().result for request in started]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_rows_in_a_batch_give_what_each_gives_alone(
    family: str, llama: LoadedModel, gpt2: LoadedModel
) -> None:
    loaded = {"llama": llama, "gpt2": gpt2}[family]
    assert can_batch(loaded)
    batch = prompts(loaded)
    expected = [alone(loaded, prompt, GREEDY) for prompt in batch]
    batcher = Batcher(loaded, max_batch=8)
    assert run_together(batcher, [(prompt, GREEDY) for prompt in batch]) == expected
    assert batcher.widest >= 2  # they did decode together
    # One at a time through the batcher, too.
    assert [run_together(batcher, [(p, GREEDY)])[0] for p in batch] == expected


def test_the_starter_model_gives_the_same_greedy_replies_batched_as_alone(
    starter_models_dir: Path,
) -> None:
    from generation.loading import load_model
    from generation.prompts import build_chat_input
    from generation.specs import ModelSpec

    folder = starter_models_dir / "SmolLM2-135M-Instruct"
    loaded = load_model(ModelSpec(name="SmolLM2", source=str(folder)))
    questions = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Why is the sky blue?",
    ]
    batch = [
        build_chat_input(
            loaded.tokenizer, [{"role": "user", "content": q}], system="", max_prompt_tokens=512
        )
        for q in questions
    ]
    params = replace(GREEDY, max_new_tokens=32)
    expected = [alone(loaded, prompt, params) for prompt in batch]
    assert len({text for text, _ in expected}) == 3  # real, different replies
    assert run_together(Batcher(loaded, max_batch=4), [(p, params) for p in batch]) == expected


def test_the_repetition_penalty_is_per_row_as_generate_applies_it(llama: LoadedModel) -> None:
    batch = prompts(llama)
    penalised = replace(GREEDY, repetition_penalty=1.8)
    expected = [alone(llama, batch[0], penalised), alone(llama, batch[1], GREEDY)]
    assert expected[0] != alone(llama, batch[0], GREEDY)  # the penalty changes the reply
    batcher = Batcher(llama, max_batch=4)
    assert run_together(batcher, [(batch[0], penalised), (batch[1], GREEDY)]) == expected


def test_a_seeded_sampled_request_gives_the_same_text_alone_or_beside_others(
    llama: LoadedModel,
) -> None:
    batch = prompts(llama)
    seeded = SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=30, seed=1234)
    batcher = Batcher(llama, max_batch=8)
    by_itself = run_together(batcher, [(batch[0], seeded)])[0]
    unseeded = SamplingParams(temperature=1.0, max_new_tokens=30)
    beside = run_together(batcher, [(batch[0], seeded), (batch[1], unseeded), (batch[2], GREEDY)])
    assert beside[0] == by_itself
    other_seed = run_together(batcher, [(batch[0], replace(seeded, seed=99))])[0]
    assert other_seed != by_itself  # the seed matters


def test_rows_join_and_leave_mid_flight_each_to_its_own_limit(llama: LoadedModel) -> None:
    batch = prompts(llama)
    batcher = Batcher(llama, max_batch=4)
    long = Request(batcher, batch[0], replace(GREEDY, max_new_tokens=60)).start()
    short = Request(batcher, batch[1], replace(GREEDY, max_new_tokens=5)).start()
    deadline = time.monotonic() + 30
    while len(long.pieces) < 15 and time.monotonic() < deadline:  # well under way
        time.sleep(0.005)
    late = Request(batcher, batch[2], replace(GREEDY, max_new_tokens=10)).start()
    for request in (long, short, late):
        request.wait()
    assert long.result[1] == ("length", 60)
    assert short.result[1] == ("length", 5)
    assert late.result[1] == ("length", 10)
    # The late row joined while the long one was decoding, and gives what it gives alone.
    assert late.result == alone(llama, batch[2], replace(GREEDY, max_new_tokens=10))
    assert long.result == alone(llama, batch[0], replace(GREEDY, max_new_tokens=60))
    assert batcher.widest >= 2
    assert not batcher._rows and batcher.active == 0  # everyone left


def test_a_stop_is_heard_within_a_step_and_the_others_go_on(llama: LoadedModel) -> None:
    batch = prompts(llama)
    batcher = Batcher(llama, max_batch=4)
    stop = threading.Event()
    stopped = Request(batcher, batch[0], replace(GREEDY, max_new_tokens=200), stop.is_set)
    other = Request(batcher, batch[1], replace(GREEDY, max_new_tokens=40))
    stopped.start()
    other.start()
    deadline = time.monotonic() + 30
    while stopped.stream.stats.completion_tokens < 8 and time.monotonic() < deadline:
        time.sleep(0.001)
    at_stop = stopped.stream.stats.completion_tokens
    stop.set()
    stopped.wait()
    other.wait()
    reason, tokens = stopped.result[1]
    assert reason == "stopped"
    # Heard at the next step: the tokens already queued to the caller, plus one.
    assert tokens <= at_stop + 3
    assert other.result == alone(llama, batch[1], replace(GREEDY, max_new_tokens=40))


def test_stop_sequences_and_limits_are_per_row(llama: LoadedModel) -> None:
    batch = prompts(llama)
    free_text, _ = alone(llama, batch[0], GREEDY)
    stop_at = free_text[6:8]  # a sequence the greedy reply is sure to contain
    with_stop = replace(GREEDY, stop=(stop_at,))
    expected_cut = alone(llama, batch[0], with_stop)
    batcher = Batcher(llama, max_batch=4)
    cut, free = run_together(batcher, [(batch[0], with_stop), (batch[1], GREEDY)])
    assert cut == expected_cut
    assert cut[1][0] == "stop_sequence" and stop_at not in cut[0]
    assert free == alone(llama, batch[1], GREEDY)


def test_a_long_prompt_is_prefilled_in_chunks_without_freezing_the_batch(
    llama: LoadedModel,
) -> None:
    batch = prompts(llama)
    long_prompt = (batch[2] * 12)[:300]
    batcher = Batcher(llama, max_batch=4, prefill_tokens=16)
    running = Request(batcher, batch[0], replace(GREEDY, max_new_tokens=150)).start()
    deadline = time.monotonic() + 30
    while len(running.pieces) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    joined_at = time.monotonic()
    newcomer = Request(batcher, long_prompt, replace(GREEDY, max_new_tokens=5)).start()
    newcomer.wait()
    first_token = newcomer.arrivals[0] if newcomer.arrivals else time.monotonic()
    # 300 tokens at 16 a step: about 19 steps of prefill, each also a decoding step for
    # the running row, which kept receiving tokens meanwhile.
    during = [t for t in running.arrivals if joined_at <= t <= first_token]
    assert len(during) >= 10
    running.wait()
    assert newcomer.result == alone(llama, long_prompt, replace(GREEDY, max_new_tokens=5))


class _RunsOutOfMemoryBeyond:
    """The model, except that a forward pass of more than `rows` rows runs out of memory
    (as a GPU does when one more request's cache does not fit)."""

    def __init__(self, model: Any, rows: int) -> None:
        self._model = model
        self.rows = rows
        self.config = model.config
        self.generation_config = model.generation_config

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs["input_ids"].shape[0] > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self._model(**kwargs)


def test_out_of_memory_fails_the_newest_row_and_the_batch_goes_on(llama: LoadedModel) -> None:
    batch = prompts(llama)
    tight = replace(llama, model=_RunsOutOfMemoryBeyond(llama.model, rows=2))
    batcher = Batcher(tight, max_batch=4)
    params = replace(GREEDY, max_new_tokens=30)
    first = Request(batcher, batch[0], params).start()
    second = Request(batcher, batch[1], params).start()
    deadline = time.monotonic() + 30
    while min(len(first.pieces), len(second.pieces)) < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    newest = Request(batcher, batch[2], params).start()
    for request in (first, second, newest):
        request.wait()
    assert isinstance(newest.error, BatchOutOfMemory)
    assert first.result == alone(llama, batch[0], params)
    assert second.result == alone(llama, batch[1], params)


def test_open_stream_batches_only_what_the_batcher_can_honour(llama: LoadedModel) -> None:
    prompt = prompts(llama)[0]
    assert isinstance(open_stream(llama, prompt, GREEDY), TokenStream)  # no batcher
    batched = replace(llama, batcher=Batcher(llama, max_batch=2))
    assert isinstance(open_stream(batched, prompt, GREEDY), BatchedStream)
    neutral = open_stream(batched, prompt, GREEDY, generate_kwargs={"min_length": 0})
    assert isinstance(neutral, BatchedStream)
    forced = open_stream(batched, prompt, GREEDY, generate_kwargs={"forced_bos_token_id": 5})
    assert isinstance(forced, TokenStream)
