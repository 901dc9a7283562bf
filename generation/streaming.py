"""Stream text from a causal or seq2seq LM as it is generated, with stop sequences and a
stop flag. Summaries and translations stream through the same TokenStream as chat replies."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from generation.loading import LoadedModel
from generation.specs import SamplingParams

_DONE = object()


@dataclass
class StreamStats:
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = ""  # "eos", "length", "stop_sequence" or "stopped"
    first_token_seconds: float | None = None
    total_seconds: float = 0.0


class TextAssembler:
    """Turns new token ids into text as they come, holds back what may be the start of
    a stop sequence (or half a character), and hands each new piece to `on_text`. When a
    stop sequence appears it sets `stop_event` and ignores what comes after."""

    def __init__(
        self,
        tokenizer: Any,
        stops: tuple[str, ...],
        stop_event: threading.Event,
        stats: StreamStats,
        on_text: Callable[[str], None],
        started: float,
        hidden: frozenset[int] = frozenset(),
    ) -> None:
        self.tokenizer = tokenizer
        self.hidden = hidden
        self.stops = stops
        self.stop_event = stop_event
        self.stats = stats
        self.on_text = on_text
        self.started = started
        self.token_ids: list[int] = []
        self.text = ""  # the text handed out so far
        self.cut = False  # a stop sequence ended the text

    def add(self, token_ids: list[int]) -> None:
        if self.cut:
            return
        self.token_ids.extend(token_ids)
        self.stats.completion_tokens = len(self.token_ids)
        if self.stats.first_token_seconds is None:
            self.stats.first_token_seconds = time.perf_counter() - self.started
        text = _decode(self.tokenizer, self._visible_ids())
        sent = len(self.text)
        if self.stops:
            cut = _first_stop(text, self.stops, start=max(0, sent - max(map(len, self.stops))))
            if cut is not None:
                self.cut = True
                self.stop_event.set()
                self._send(text[:cut])
                return
        self._send(text[: len(text) - _held_back(text, self.stops)])

    def end(self) -> None:
        """Text held back for a stop sequence that never came goes out at the end."""
        if not self.cut:
            self._send(_decode(self.tokenizer, self._visible_ids()))

    def _visible_ids(self) -> list[int]:
        if not self.hidden:
            return self.token_ids
        return [t for t in self.token_ids if t not in self.hidden]

    def _send(self, text: str) -> None:
        if len(text) > len(self.text):
            piece = text[len(self.text) :]
            self.text = text
            self.on_text(piece)


class _TextStreamer(BaseStreamer):
    """Receives new token ids from generate() in the generating thread and hands them
    to a TextAssembler. When a stop sequence appears it ends generation through the
    assembler's `stop_event`."""

    def __init__(self, assembler: TextAssembler) -> None:
        self.assembler = assembler
        self._skipped_prompt = False

    def put(self, value: torch.Tensor) -> None:
        # generate() first hands over the prompt (causal LMs) or the decoder start token
        # (seq2seq LMs): neither is part of the reply.
        if not self._skipped_prompt:
            self._skipped_prompt = True
            return
        self.assembler.add(value.reshape(-1).tolist())

    def end(self) -> None:
        self.assembler.end()


class _StopWhen(StoppingCriteria):
    def __init__(self, event: threading.Event, should_stop: Callable[[], bool]) -> None:
        self.event = event
        self.should_stop = should_stop
        self.requested = False  # True once should_stop() said so (a user's stop)

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        stop = self.event.is_set()
        if not stop and self.should_stop():
            self.requested = stop = True
            self.event.set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might be the start of a stop sequence (or a split
    multi-byte character) and so must not be sent yet."""
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    if text.endswith("\ufffd"):
        hold = max(hold, 1)
    return hold


class TokenStream:
    """Text pieces as the model produces them: `run(on_text)`, or iterate.

    `should_stop` is polled between decoding steps (e.g. a stop flag in Redis); when it
    returns True generation ends after the current step. Afterwards `stats` holds token
    counts, timings and why generation ended, and `text` the whole text handed out.

    For a seq2seq model `prompt_ids` is the encoder input. `generate_kwargs` adds
    arguments to generate(), e.g. the forced first token that names a translation's
    target language. `hidden_token_ids` are generated (and counted) but never text, for
    control tokens a tokenizer does not mark special (M2M100's language tokens).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_ids: list[int],
        params: SamplingParams,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        generate_kwargs: dict[str, Any] | None = None,
        hidden_token_ids: Collection[int] = (),
    ) -> None:
        self.loaded = loaded
        self.prompt_ids = prompt_ids
        self.params = params
        self.should_stop = should_stop
        self.generate_kwargs = dict(generate_kwargs or {})
        self.hidden_token_ids = frozenset(hidden_token_ids)
        self.stats = StreamStats(prompt_tokens=len(prompt_ids))
        self.text = ""

    def _generate_kwargs(self, streamer: BaseStreamer, stop_when: _StopWhen) -> dict[str, Any]:
        p = self.params
        tokenizer = self.loaded.tokenizer
        input_ids = torch.tensor([self.prompt_ids], device=self.loaded.device)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": p.max_new_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([stop_when]),
            "pad_token_id": tokenizer.pad_token_id,
            # Streaming needs one hypothesis; summarization models often default to beams.
            "num_beams": 1,
            **({"repetition_penalty": p.repetition_penalty} if p.repetition_penalty != 1 else {}),
            **self.generate_kwargs,
        }
        if p.temperature > 0:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        """Generate in this thread, calling `on_text` with each new piece of text.

        This is the fast path: generate() keeps the thread to itself. (Running it in a
        second thread while this one waits costs up to 3x in tokens/s, measured on CUDA;
        see docs/benchmarks.md.) Exceptions from generate() or on_text propagate.
        """
        stop_event = threading.Event()
        stop_when = _StopWhen(stop_event, self.should_stop)
        started = time.perf_counter()
        text = TextAssembler(
            self.loaded.tokenizer,
            self.params.stop,
            stop_event,
            self.stats,
            on_text,
            started,
            self.hidden_token_ids,
        )
        streamer = _TextStreamer(text)
        if self.params.seed is not None:
            torch.manual_seed(self.params.seed)
        try:
            with torch.inference_mode():
                self.loaded.model.generate(**self._generate_kwargs(streamer, stop_when))
        finally:
            self.text = text.text
            self.stats.total_seconds = time.perf_counter() - started
        if text.cut:
            self.stats.finish_reason = "stop_sequence"
        elif stop_when.requested:
            self.stats.finish_reason = "stopped"
        elif text.token_ids and text.token_ids[-1] in eos_ids(self.loaded):
            # Models with forced_eos_token_id (BART, Marian) put EOS on the last allowed
            # step themselves: that is a reply cut at the length limit.
            forced = getattr(self.loaded.model.generation_config, "forced_eos_token_id", None)
            at_limit = len(text.token_ids) >= self.params.max_new_tokens
            self.stats.finish_reason = "length" if forced is not None and at_limit else "eos"
        else:
            self.stats.finish_reason = "length"
        return self.stats

    def __iter__(self) -> Iterator[str]:
        """The pieces as an iterator: run() in a background thread. Convenient for tests
        and scripts; the worker uses run(). Stopping the iteration early ends generation."""
        pieces: queue.Queue[Any] = queue.Queue()
        error: list[BaseException] = []
        consumer_gone = threading.Event()
        outer_should_stop = self.should_stop
        self.should_stop = lambda: consumer_gone.is_set() or outer_should_stop()

        def produce() -> None:
            try:
                self.run(pieces.put)
            except BaseException as exc:  # handed to the consuming thread
                error.append(exc)
            finally:
                pieces.put(_DONE)

        worker = threading.Thread(target=produce, name="generate", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not _DONE:
                yield piece
        finally:
            consumer_gone.set()
            worker.join()
            self.should_stop = outer_should_stop
        if error:
            raise error[0]


def _decode(tokenizer: Any, token_ids: list[int]) -> str:
    # NUL is never meaningful text, and databases such as PostgreSQL refuse to store it.
    return str(tokenizer.decode(token_ids, skip_special_tokens=True)).replace("\x00", "")


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def eos_ids(loaded: LoadedModel) -> set[int]:
    """The ids that end a reply: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    for source in (loaded.model.generation_config, loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids
