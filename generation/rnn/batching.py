"""Continuous batching for Atelier's character-level RNNs: the batcher of
generation.batching with a hidden state per row instead of a key/value cache.

A row joining runs its prompt through the model alone (the whole prompt at once: an RNN
step over a prompt is cheap), then its state is stacked onto the batch's along the batch
dimension; each step feeds every row its last character; a row leaving is dropped from
the state. Each row samples with its own generator and the same `_pick` as `RNNStream`,
so a seeded request gives the same text alone or beside others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from generation.batching import Batcher, _Row, follow
from generation.rnn.loading import LoadedRNN
from generation.rnn.model import State
from generation.rnn.streaming import _pick
from generation.specs import SamplingParams
from generation.streaming import StreamStats, TextAssembler


class RNNBatcher(Batcher):
    def __init__(self, loaded: LoadedRNN, max_batch: int) -> None:
        self.rnn = loaded
        super().__init__(loaded, max_batch)  # type: ignore[arg-type]
        self._state: State | None = None

    def _ending(self) -> set[int]:
        return set()  # an RNN has no end-of-text character

    def _release(self) -> None:
        self._state = None

    def _prefill_some(self) -> None:
        while self._prefilling:
            row = self._prefilling.popleft()
            reason = row.finished_reason()
            if reason is not None:
                row.out.put(("end", reason))
                continue
            ids = torch.tensor([row.prompt_ids], dtype=torch.long, device=self.rnn.device)
            try:
                logits, state = self.rnn.model(ids, None)
            except (torch.OutOfMemoryError, MemoryError):
                self._out_of_memory(row)
                continue
            token = self._pick(row, logits[0, -1])
            if self._emit(row, token):
                self._join_state(row, state)

    def _join_state(self, row: _Row, state: State) -> None:
        if self._state is None or not self._rows:
            self._state, self._rows = state, [row]
            return
        mine = self._state
        if isinstance(state, tuple) and isinstance(mine, tuple):  # an LSTM's (h, c)
            self._state = (
                torch.cat([mine[0], state[0]], dim=1),
                torch.cat([mine[1], state[1]], dim=1),
            )
        elif isinstance(state, torch.Tensor) and isinstance(mine, torch.Tensor):
            self._state = torch.cat([mine, state], dim=1)
        self._rows.append(row)

    def _step(self) -> None:
        rows = self._rows
        ids = torch.tensor([[row.last] for row in rows], dtype=torch.long, device=self.rnn.device)
        try:
            logits, state = self.rnn.model(ids, self._state)
        except (torch.OutOfMemoryError, MemoryError):
            self._drop_newest()
            return
        self._state = state
        self._stepped()
        keep = [i for i, row in enumerate(rows) if self._emit(row, self._pick(row, logits[i, -1]))]
        if len(keep) < len(rows):
            self._keep(keep)

    def _keep(self, indices: list[int]) -> None:
        if not indices:
            self._rows = []
            self._release()
            return
        index = torch.tensor(indices, device=self.rnn.device)
        if isinstance(self._state, tuple):
            h, c = self._state
            self._state = (h[:, index], c[:, index])
        elif self._state is not None:
            self._state = self._state[:, index]
        self._rows = [self._rows[i] for i in indices]

    def _pick(self, row: _Row, logits: torch.Tensor) -> int:
        assert row.generator is not None
        return _pick(logits, row.params, row.generator, self.rnn.vocab.unknown_id)


class _VocabDecoder:
    """A CharVocab with a tokenizer's decode(), for the TextAssembler."""

    def __init__(self, loaded: LoadedRNN) -> None:
        self.vocab = loaded.vocab

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.vocab.decode(ids))


class BatchedRNNStream:
    """An RNNStream run by an RNNBatcher: the same `run(on_text) -> StreamStats`."""

    def __init__(
        self,
        batcher: RNNBatcher,
        prompt_ids: list[int],
        params: SamplingParams,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.batcher = batcher
        self.prompt_ids = prompt_ids or batcher.rnn.vocab.encode("\n")  # as RNNStream starts
        self.params = params
        self.should_stop = should_stop
        self.stats = StreamStats(prompt_tokens=len(prompt_ids))
        self.text = ""

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        started = time.perf_counter()
        cut = threading.Event()
        assembler = TextAssembler(
            _VocabDecoder(self.batcher.rnn), self.params.stop, cut, self.stats, on_text, started
        )
        generator = torch.Generator()
        if self.params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.params.seed)
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        row = _Row(
            list(self.prompt_ids), self.params, self.should_stop, out, cut, threading.Event()
        )
        row.generator = generator
        self.batcher.submit(row)
        try:
            self.stats.finish_reason = follow(row, assembler)
        finally:
            self.text = assembler.text
            self.stats.total_seconds = time.perf_counter() - started
        return self.stats
