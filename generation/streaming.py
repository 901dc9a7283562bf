"""Stream text from a causal LM as it is generated, with stop sequences and a stop flag."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
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


class _QueueStreamer(BaseStreamer):
    """Receives new token ids from generate() (running in a thread) and queues them."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self._skipped_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._skipped_prompt:  # generate() first hands over the prompt itself
            self._skipped_prompt = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(_DONE)


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
    """Iterate over text pieces as the model produces them.

    `should_stop` is polled between decoding steps (e.g. a stop flag in Redis); when it
    returns True generation ends after the current step. After iteration, `stats` holds
    token counts, timings and why generation ended.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_ids: list[int],
        params: SamplingParams,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.loaded = loaded
        self.prompt_ids = prompt_ids
        self.params = params
        self.should_stop = should_stop
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
        }
        if p.temperature > 0:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def __iter__(self) -> Iterator[str]:
        tokenizer = self.loaded.tokenizer
        streamer = _QueueStreamer()
        stop_event = threading.Event()
        error: list[BaseException] = []
        stop_when = _StopWhen(stop_event, self.should_stop)
        kwargs = self._generate_kwargs(streamer, stop_when)

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.loaded.model.generate(**kwargs)
            except BaseException as exc:  # handed to the consuming thread
                error.append(exc)
                streamer.end()

        if self.params.seed is not None:
            torch.manual_seed(self.params.seed)
        started = time.perf_counter()
        worker = threading.Thread(target=run, name="generate", daemon=True)
        worker.start()

        eos_ids = _eos_ids(self.loaded)
        token_ids: list[int] = []
        sent = 0
        stops = self.params.stop
        try:
            while True:
                item = streamer.queue.get()
                if item is _DONE:
                    break
                token_ids.extend(item)
                self.stats.completion_tokens = len(token_ids)
                if self.stats.first_token_seconds is None:
                    self.stats.first_token_seconds = time.perf_counter() - started
                text = _decode(tokenizer, token_ids)
                if stops:
                    cut = _first_stop(text, stops, start=max(0, sent - max(map(len, stops))))
                    if cut is not None:
                        stop_event.set()
                        self.stats.finish_reason = "stop_sequence"
                        if cut > sent:
                            yield text[sent:cut]
                        sent = cut
                        text = text[:cut]
                        self.text = text
                        break
                ready = len(text) - _held_back(text, stops)
                if ready > sent:
                    yield text[sent:ready]
                    sent = ready
                self.text = text[:sent]
        finally:
            # Also reached when the consumer stops iterating early: end generate() too.
            stop_event.set()
            worker.join()
        if error:
            raise error[0]
        if not self.stats.finish_reason:
            text = _decode(tokenizer, token_ids)
            if len(text) > sent:  # text held back for a stop sequence that never came
                yield text[sent:]
            self.text = text
            if stop_when.requested:
                self.stats.finish_reason = "stopped"
            elif token_ids and token_ids[-1] in eos_ids:
                self.stats.finish_reason = "eos"
            else:
                self.stats.finish_reason = "length"
        self.stats.total_seconds = time.perf_counter() - started


def _decode(tokenizer: Any, token_ids: list[int]) -> str:
    # NUL is never meaningful text, and databases such as PostgreSQL refuse to store it.
    return str(tokenizer.decode(token_ids, skip_special_tokens=True)).replace("\x00", "")


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (loaded.model.generation_config, loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids
