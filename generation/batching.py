"""Continuous batching for decoder-only transformers models: many streams decoded together,
one forward pass per step for the whole batch, requests joining and leaving between steps.

A `Batcher` belongs to one loaded model and owns one thread, the only one that runs the
model for batched requests. A request (`BatchedStream.run`, called from the thread that
serves the request, e.g. a worker's generation thread) is queued as a `_Row`; between two
decoding steps the batcher prefills queued rows (at most `prefill_tokens` prompt tokens a
step, so a long prompt never freezes the others for more than a step), then merges each
prefilled row's key/value cache into the batch's, left-padded to a common length. Every
step feeds each row its own last token at its own position; rows that end (end of
sequence, max tokens, a stop sequence, a stop asked, the caller gone) leave the batch at
once, and padding columns no row needs are cut off.

Each row keeps its own sampling: temperature (0 is greedy), top_p, repetition penalty,
and a generator of its own seeded with its seed, so a request's text does not depend on
what else is in the batch. Masked padding adds exact zeros to attention, so greedy output
is the same as the request alone (up to the float rounding of different matrix shapes).

Text is assembled in the requesting thread, not the batcher's: the batcher hands each new
token id over a queue, and the caller decodes it, holds back what may begin a stop
sequence and calls `on_text` (which may write to Redis or a database), so the batcher's
thread does nothing but tensor work and the callbacks never run on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from generation.loading import LoadedModel
from generation.specs import SamplingParams
from generation.streaming import StreamStats, TextAssembler

log = logging.getLogger(__name__)

PREFILL_TOKENS = 512  # prompt tokens prefilled per step, at most (at least one chunk)
IDLE_SECONDS = 5.0  # the thread ends after this long with nothing to do

# generate() arguments a batched stream can honour (they change nothing for a causal LM).
_NEUTRAL_KWARGS = {"min_length": 0}


class BatchOutOfMemory(MemoryError):
    """This request did not fit in memory beside the others in the batch; they go on."""


@dataclass
class _Row:
    """One request in the batch, as the batcher's thread sees it."""

    prompt_ids: list[int]
    params: SamplingParams
    should_stop: Callable[[], bool]
    out: queue.SimpleQueue[Any]  # token ids, then ("end", reason) or an exception
    cut: threading.Event  # set by the caller: a stop sequence ended the text
    gone: threading.Event  # set by the caller: nobody reads this row any more
    generator: torch.Generator | None = None
    joined: float = 0.0  # monotonic order of joining, for choosing the newest
    # prefill progress and decoding state
    cache: Any = None  # the row's own cache while it is prefilled
    prefilled: int = 0
    position: int = 0  # the position of the next token fed
    last: int = 0  # the token fed at the next step
    generated: list[int] = field(default_factory=list)
    seen: torch.Tensor | None = None  # token ids so far, for the repetition penalty

    def finished_reason(self) -> str | None:
        if self.gone.is_set():
            return "stopped"
        if self.cut.is_set():
            return "stop_sequence"
        if self.should_stop():
            return "stopped"
        return None


class Batcher:
    """The batching engine of one loaded causal LM (see the module's docstring)."""

    def __init__(
        self, loaded: LoadedModel, max_batch: int, *, prefill_tokens: int = PREFILL_TOKENS
    ) -> None:
        self.loaded = loaded
        self.max_batch = max(1, max_batch)
        self.prefill_tokens = max(1, prefill_tokens)
        self.eos = self._ending()
        self._cond = threading.Condition()
        self._waiting: deque[_Row] = deque()  # queued, not prefilled yet
        self._prefilling: deque[_Row] = deque()
        self._rows: list[_Row] = []  # in the batch, in the cache's batch order
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [rows, columns] 1 = a real token
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run (for tests and figures)
        self.widest = 0  # the most rows decoded together so far

    def _ending(self) -> set[int]:
        return _ending_ids(self.loaded)

    # -- the requesting side ----------------------------------------------------------

    def submit(self, row: _Row) -> None:
        with self._cond:
            row.joined = time.monotonic()
            self._waiting.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name=f"batcher-{self.loaded.spec.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    @property
    def active(self) -> int:
        """Requests held now: queued, being prefilled or decoding."""
        return len(self._waiting) + len(self._prefilling) + len(self._rows)

    # -- the batcher's thread ---------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self.active:
                    self._cond.wait(IDLE_SECONDS)
                    if not self.active:
                        self._thread = None
                        self._release()
                        return
                room = self.max_batch - len(self._rows) - len(self._prefilling)
                while room > 0 and self._waiting:
                    self._prefilling.append(self._waiting.popleft())
                    room -= 1
            try:
                with torch.inference_mode():
                    self._prefill_some()
                    if self._rows:
                        self._step()
            except Exception:  # a bug: end every row with it rather than hang them
                log.exception("batcher of %s failed", self.loaded.spec.name)
                self._fail_all()

    def _release(self) -> None:
        self._cache = None
        self._mask = None

    def _fail_all(self) -> None:
        error = RuntimeError("the batching engine failed; see the worker's log")
        with self._cond:
            rows = [*self._rows, *self._prefilling]
            self._rows, self._prefilling = [], deque()
        for row in rows:
            row.out.put(error)
        self._release()

    def _prefill_some(self) -> None:
        """Prefill queued rows for at most `prefill_tokens` prompt tokens (always at
        least one chunk, so a long prompt advances), then merge the finished ones."""
        budget = self.prefill_tokens
        while self._prefilling and budget > 0:
            row = self._prefilling[0]
            if row.finished_reason() is not None:  # stopped while it waited
                self._prefilling.popleft()
                row.out.put(("end", row.finished_reason()))
                continue
            size = min(budget, len(row.prompt_ids) - row.prefilled)
            try:
                logits = self._prefill_chunk(row, size)
            except (torch.OutOfMemoryError, MemoryError):
                self._prefilling.popleft()
                self._out_of_memory(row)
                continue
            budget -= size
            if row.prefilled < len(row.prompt_ids):
                break  # the rest of this prompt at the next step
            self._prefilling.popleft()
            row.position = len(row.prompt_ids)
            token = self._pick(row, logits)
            if self._emit(row, token):
                self._join(row)
            # a row that ended on its first token never joins the batch

    def _prefill_chunk(self, row: _Row, size: int) -> torch.Tensor:
        device = self.loaded.device
        if row.cache is None:
            row.cache = DynamicCache(config=self.loaded.model.config)
        start, end = row.prefilled, row.prefilled + size
        ids = torch.tensor([row.prompt_ids[start:end]], device=device)
        out = self.loaded.model(
            input_ids=ids,
            attention_mask=torch.ones((1, end), dtype=torch.long, device=device),
            position_ids=torch.arange(start, end, device=device).unsqueeze(0),
            cache=row.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        row.prefilled = end
        return out.logits[0, -1, :]

    def _join(self, row: _Row) -> None:
        """The prefilled row's cache into the batch's, left-padded to a common length."""
        cache, row.cache = row.cache, None
        length = cache.get_seq_length()
        device = self.loaded.device
        if self._cache is None or not self._rows:
            self._cache = cache
            self._mask = torch.ones((1, length), dtype=torch.long, device=device)
            self._rows = [row]
            return
        assert self._mask is not None
        width = self._mask.shape[1]
        total = max(width, length)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, total), _pad_left(theirs.keys, total)])
            mine.values = torch.cat(
                [_pad_left(mine.values, total), _pad_left(theirs.values, total)]
            )
        self._mask = torch.cat(
            [
                _pad_left(self._mask, total, dim=1),
                _pad_left(torch.ones((1, length), dtype=torch.long, device=device), total, dim=1),
            ]
        )
        self._rows.append(row)

    def _step(self) -> None:
        """One forward pass for every row in the batch, then each row's next token."""
        assert self._mask is not None
        device = self.loaded.device
        rows = self._rows
        ids = torch.tensor([[row.last] for row in rows], device=device)
        positions = torch.tensor([[row.position] for row in rows], device=device)
        mask = torch.cat(
            [self._mask, torch.ones((len(rows), 1), dtype=torch.long, device=device)], dim=1
        )
        try:
            out = self.loaded.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=self._cache,
                use_cache=True,
            )
        except (torch.OutOfMemoryError, MemoryError):
            self._undo_step(len(mask[0]) - 1)
            self._drop_newest()
            return
        self._mask = mask
        self._stepped()
        logits = out.logits[:, -1, :]
        keep = []
        for index, row in enumerate(rows):
            row.position += 1
            if self._emit(row, self._pick(row, logits[index])):
                keep.append(index)
        if len(keep) < len(rows):
            self._keep(keep)

    def _drop_newest(self) -> None:
        """After a forward pass ran out of memory: the newest row fails, the others stay
        (the step is taken again without it)."""
        rows = self._rows
        newest = max(range(len(rows)), key=lambda i: rows[i].joined)
        self._out_of_memory(rows[newest])
        self._keep([i for i in range(len(rows)) if i != newest])

    def _stepped(self) -> None:
        self.steps += 1
        self.widest = max(self.widest, len(self._rows))

    def _undo_step(self, width: int) -> None:
        """After a failed forward pass: drop whatever layers appended to the cache."""
        for layer in self._cache.layers:
            if layer.keys is not None and layer.keys.shape[-2] > width:
                layer.keys = layer.keys[..., :width, :]
                layer.values = layer.values[..., :width, :]

    def _keep(self, indices: list[int]) -> None:
        """Only these rows stay; padding columns that no remaining row uses are cut."""
        if not indices:
            self._rows = []
            self._release()
            return
        assert self._mask is not None
        index = torch.tensor(indices, device=self.loaded.device)
        mask = self._mask[index]
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:, :]
            layer.values = layer.values[index, :, first:, :]
        self._rows = [self._rows[i] for i in indices]

    def _emit(self, row: _Row, token: int) -> bool:
        """Hand the token to the caller; False when the row ends with it."""
        row.generated.append(token)
        row.last = token
        row.out.put(token)
        if token in self.eos:
            row.out.put(("end", "eos"))
            return False
        if len(row.generated) >= row.params.max_new_tokens:
            row.out.put(("end", "length"))
            return False
        reason = row.finished_reason()
        if reason is not None:
            row.out.put(("end", reason))
            return False
        return True

    def _pick(self, row: _Row, logits: torch.Tensor) -> int:
        """The row's next token from its logits, by its own sampling parameters."""
        params = row.params
        logits = logits.float()
        penalty = params.repetition_penalty
        if penalty != 1.0:
            seen = torch.tensor(row.prompt_ids + row.generated, device=logits.device).unique()
            scores = logits[seen]
            logits = logits.clone()
            logits[seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=False)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= 1 - params.top_p
            drop[-1] = False  # always keep the most likely token
            logits = logits.clone()
            logits[order[drop]] = float("-inf")
        probs = logits.softmax(dim=-1)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _out_of_memory(self, row: _Row) -> None:
        log.warning("batcher of %s: out of memory; the newest request fails", self.loaded.spec.name)
        row.cache = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        row.out.put(BatchOutOfMemory("out of memory beside the other requests in the batch"))


def _ending_ids(loaded: LoadedModel) -> set[int]:
    """The ids that end a reply, as generate() reads them: the generation config's."""
    value = getattr(loaded.model.generation_config, "eos_token_id", None)
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int)}
    return set()


def _pad_left(tensor: torch.Tensor, total: int, dim: int = -2) -> torch.Tensor:
    """`tensor` with zeros before it along `dim`, up to `total` long."""
    missing = total - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def can_batch(loaded: LoadedModel) -> bool:
    """A decoder-only model whose cache is plain per-layer keys and values (no sliding
    window or other special layer), which is what the batcher knows how to merge."""
    if loaded.is_encoder_decoder or loaded.tokenizer is None:
        return False
    if not hasattr(loaded.model, "generate"):
        return False
    try:
        cache = DynamicCache(config=loaded.model.config)
    except Exception:
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


class BatchedStream:
    """A TokenStream run by a Batcher: the same `run(on_text) -> StreamStats`, `text`
    and `stats`, with the model shared with the batch's other requests."""

    def __init__(
        self,
        batcher: Batcher,
        prompt_ids: list[int],
        params: SamplingParams,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        hidden_token_ids: Collection[int] = (),
    ) -> None:
        self.batcher = batcher
        self.prompt_ids = prompt_ids
        self.params = params
        self.should_stop = should_stop
        self.hidden_token_ids = frozenset(hidden_token_ids)
        self.stats = StreamStats(prompt_tokens=len(prompt_ids))
        self.text = ""

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        if not self.prompt_ids:
            raise ValueError("the prompt is empty")
        started = time.perf_counter()
        cut = threading.Event()
        assembler = TextAssembler(
            self.batcher.loaded.tokenizer,
            self.params.stop,
            cut,
            self.stats,
            on_text,
            started,
            self.hidden_token_ids,
        )
        generator = None
        if self.params.temperature > 0:
            generator = torch.Generator(device=self.batcher.loaded.device)
            if self.params.seed is not None:
                generator.manual_seed(self.params.seed)
            else:
                generator.seed()
        row = _Row(
            prompt_ids=list(self.prompt_ids),
            params=self.params,
            should_stop=self.should_stop,
            out=queue.SimpleQueue(),
            cut=cut,
            gone=threading.Event(),
            generator=generator,
        )
        self.batcher.submit(row)
        try:
            self.stats.finish_reason = follow(row, assembler)
        finally:
            self.text = assembler.text
            self.stats.total_seconds = time.perf_counter() - started
        return self.stats


def follow(row: _Row, assembler: TextAssembler) -> str:
    """In the requesting thread: the row's token ids into text (through `assembler`, to
    the caller's `on_text`) until the batcher ends the row; returns why it ended. An
    error the batcher handed over (out of memory) is raised here."""
    reason = ""
    try:
        while True:
            item = row.out.get()
            if isinstance(item, int):
                assembler.add([item])
            elif isinstance(item, BaseException):
                raise item
            else:
                reason = item[1]
                break
        assembler.end()
    finally:
        row.gone.set()  # whatever happened here, the batcher lets the row go
    return "stop_sequence" if assembler.cut else reason


def open_stream(
    loaded: LoadedModel,
    prompt_ids: list[int],
    params: SamplingParams,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    generate_kwargs: dict[str, Any] | None = None,
    hidden_token_ids: Collection[int] = (),
) -> Any:
    """The stream for a request: batched with the model's other requests when the model
    has a batcher and the request asks nothing of generate() the batcher cannot do,
    else a TokenStream of its own."""
    from generation.streaming import TokenStream

    extra = dict(generate_kwargs or {})
    batcher = loaded.batcher
    if batcher is not None and all(_NEUTRAL_KWARGS.get(k, object()) == v for k, v in extra.items()):
        return BatchedStream(
            batcher, prompt_ids, params, should_stop, hidden_token_ids=hidden_token_ids
        )
    return TokenStream(
        loaded,
        prompt_ids,
        params,
        should_stop,
        generate_kwargs=extra,
        hidden_token_ids=hidden_token_ids,
    )
