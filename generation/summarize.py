"""Summaries of any length of text, from a seq2seq model or a chat model, streamed.

A text longer than the model takes at once is split by tokens at sentence boundaries; each
chunk is summarized, the summaries are joined and summarized again (recursively while they
still do not fit), and the last summary is the one that streams: map-reduce. Length
presets set the final summary's token budget.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from generation.batching import open_stream
from generation.loading import LoadedModel
from generation.prompts import build_chat_input
from generation.specs import GenerationError, SamplingParams, SummaryLength
from generation.streaming import StreamStats


@dataclass(frozen=True)
class LengthPreset:
    max_new_tokens: int  # the final summary's token budget
    guidance: str  # what a chat model is asked for


LENGTH_PRESETS: dict[SummaryLength, LengthPreset] = {
    SummaryLength.SHORT: LengthPreset(64, "in one or two sentences"),
    SummaryLength.MEDIUM: LengthPreset(160, "in one paragraph"),
    SummaryLength.LONG: LengthPreset(320, "in a few paragraphs"),
}

# A chunk of input per model call: seq2seq encoders are trained on up to ~1024 tokens; chat
# models take more, but a long prompt is slow to prefill on CPU and no better summarized.
MAX_SEQ2SEQ_CHUNK_TOKENS = 1024
MAX_CHAT_CHUNK_TOKENS = 3072
MIN_CHUNK_TOKENS = 32
MAX_LEVELS = 8  # each level divides the text by ~4: 4**8 chunks is far beyond any input

SYSTEM_PROMPT = (
    "You summarize texts. Keep the key facts, names and numbers, write in the language of "
    "the text, and reply with the summary only."
)

# A sentence ends at . ! ? … (and closing quotes or brackets) before whitespace, at CJK
# full stops, or at a line break.
_CLOSERS = "\"'\u201d\u2019\u00bb)\\]"
_CJK_ENDS = "\u3002\uff01\uff1f"
_SENTENCE = re.compile(
    rf"\S.*?(?:[.!?\u2026]+[{_CLOSERS}]*(?=\s|$)|[{_CJK_ENDS}]+[{_CLOSERS}\u300d\u300f]*|(?=\n)|$)",
    re.DOTALL,
)


@dataclass(frozen=True)
class SummaryProgress:
    """One map step done: `level` 1 summarizes the input's chunks, level 2 those
    summaries, and so on; `done` of `total` chunks at this level are summarized."""

    level: int
    done: int
    total: int


def split_sentences(text: str) -> list[str]:
    """Sentences (and lines, which end one too), stripped, in order; nothing is lost but
    whitespace between them."""
    return [match.group().strip() for match in _SENTENCE.finditer(text) if match.group().strip()]


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _split_long(tokenizer: Any, piece: str, max_tokens: int) -> list[str]:
    """A sentence longer than a chunk: split between words, or between characters for
    scripts without spaces."""
    words = piece.split()
    if len(words) == 1:
        if count_tokens(tokenizer, piece) <= max_tokens or len(piece) < 2:
            return [piece]
        middle = len(piece) // 2
        return _split_long(tokenizer, piece[:middle], max_tokens) + _split_long(
            tokenizer, piece[middle:], max_tokens
        )
    return _pack(tokenizer, words, max_tokens)


def _pack(tokenizer: Any, pieces: list[str], max_tokens: int) -> list[str]:
    """Join consecutive pieces with spaces into as few chunks of at most max_tokens as a
    greedy pass gives. Per-piece counts estimate a chunk's size; each chunk is checked as
    a whole, since joining can change how text splits into tokens."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        tokens = count_tokens(tokenizer, piece)
        if tokens > max_tokens:
            chunks += _flush(tokenizer, current, max_tokens)
            current, size = [], 0
            chunks += _split_long(tokenizer, piece, max_tokens)
            continue
        if current and size + tokens + 1 > max_tokens:
            chunks += _flush(tokenizer, current, max_tokens)
            current, size = [], 0
        current.append(piece)
        size += tokens + 1
    chunks += _flush(tokenizer, current, max_tokens)
    return chunks


def _flush(tokenizer: Any, pieces: list[str], max_tokens: int) -> list[str]:
    if not pieces:
        return []
    text = " ".join(pieces)
    if len(pieces) == 1 or count_tokens(tokenizer, text) <= max_tokens:
        return [text]
    middle = len(pieces) // 2
    return _flush(tokenizer, pieces[:middle], max_tokens) + _flush(
        tokenizer, pieces[middle:], max_tokens
    )


def chunk_text(text: str, tokenizer: Any, max_tokens: int) -> list[str]:
    """Split text into chunks of at most max_tokens tokens, breaking between sentences
    (a sentence longer than a chunk is broken between words)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    return _pack(tokenizer, split_sentences(text), max_tokens)


def summarization_prefix(config: Any) -> str:
    """What goes before the text: T5 models were trained with "summarize: " (named in
    their config's task_specific_params); BART and Pegasus take the bare text."""
    params = getattr(config, "task_specific_params", None) or {}
    prefix = (params.get("summarization") or {}).get("prefix")
    if isinstance(prefix, str):
        return prefix
    if getattr(config, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        return "summarize: "
    return ""


class SummaryStream:
    """A summary of `text`, streamed like a chat reply: `run(on_text)` returns StreamStats.

    The final summary's length comes from the preset; `params` gives its sampling
    (temperature, top_p, seed, stop sequences; greedy by default). Map steps decode
    greedily, so the same input gives the same intermediate summaries; `on_progress`
    hears of each one. `chunk_tokens` (text tokens per call) defaults to what the model's
    context allows.
    `should_stop` is polled between decoding steps of every call, map steps included.
    Afterwards `stats` counts the tokens of all model calls, and `text` is the summary.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        text: str,
        *,
        length: SummaryLength | str = SummaryLength.MEDIUM,
        params: SamplingParams | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_progress: Callable[[SummaryProgress], None] | None = None,
        chunk_tokens: int | None = None,
    ) -> None:
        if not text.strip():
            raise GenerationError("there is no text to summarize")
        self.loaded = loaded
        self.source_text = text
        self.preset = LENGTH_PRESETS[SummaryLength(length)]
        self.params = replace(
            params or SamplingParams(temperature=0.0), max_new_tokens=self.preset.max_new_tokens
        )
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.seq2seq = loaded.is_encoder_decoder
        self.prefix = summarization_prefix(loaded.model.config) if self.seq2seq else ""
        self.chunk_tokens = chunk_tokens or self._chunk_budget()
        if self.chunk_tokens < MIN_CHUNK_TOKENS:
            raise GenerationError(
                f"model {loaded.spec.name!r} has too little context to summarize "
                f"({self.chunk_tokens} tokens of text would fit per call)"
            )
        # A map summary at most a quarter of its chunk: each level shrinks the text ~4x.
        self.map_tokens = max(8, min(self.preset.max_new_tokens, self.chunk_tokens // 4))
        self.stats = StreamStats(prompt_tokens=0)
        self.text = ""
        self.calls = 0  # model calls made, map steps and the final one

    # -- budgets and prompts ------------------------------------------------------------

    def _chunk_budget(self) -> int:
        loaded = self.loaded
        context = loaded.context_length
        if self.seq2seq:
            limit = getattr(loaded.tokenizer, "model_max_length", context)
            room = min(context, limit if isinstance(limit, int) else context)
            overhead = len(self._seq2seq_ids("")) + 1
            return min(MAX_SEQ2SEQ_CHUNK_TOKENS, room) - overhead
        overhead = len(self._chat_ids("", final=True, max_prompt_tokens=context))
        return min(MAX_CHAT_CHUNK_TOKENS, context - overhead - self.preset.max_new_tokens)

    def _seq2seq_ids(self, text: str) -> list[int]:
        return list(self.loaded.tokenizer(self.prefix + text)["input_ids"])

    def _chat_ids(self, text: str, *, final: bool, max_prompt_tokens: int) -> list[int]:
        what = "this text" if final else "this part of a longer text"
        guidance = self.preset.guidance if final else "briefly"
        message = f"Summarize {what} {guidance}:\n\n{text}"
        return build_chat_input(
            self.loaded.tokenizer,
            [{"role": "user", "content": message}],
            system=SYSTEM_PROMPT,
            max_prompt_tokens=max_prompt_tokens,
            model_name=self.loaded.spec.name,
        )

    def _prompt_ids(self, text: str, *, final: bool, new_tokens: int) -> list[int]:
        if self.seq2seq:
            return self._seq2seq_ids(text)
        room = self.loaded.context_length - new_tokens
        return self._chat_ids(text, final=final, max_prompt_tokens=room)

    # -- running ------------------------------------------------------------------------

    def _call(
        self, text: str, params: SamplingParams, on_text: Callable[[str], None], *, final: bool
    ) -> StreamStats:
        prompt = self._prompt_ids(text, final=final, new_tokens=params.max_new_tokens)
        # Summarization configs (e.g. bart-large-cnn's min_length=56) ask for more than a
        # map step's short budget; the budget wins, without a warning per chunk.
        extra = {} if final else {"min_length": 0}
        stream = open_stream(
            self.loaded, prompt, params, should_stop=self.should_stop, generate_kwargs=extra
        )
        self.calls += 1
        stats = stream.run(on_text)
        self.stats.prompt_tokens += stats.prompt_tokens
        self.stats.completion_tokens += stats.completion_tokens
        return stats

    def _map(self, chunk: str) -> tuple[str, StreamStats]:
        pieces: list[str] = []
        greedy = SamplingParams(temperature=0.0, max_new_tokens=self.map_tokens)
        stats = self._call(chunk, greedy, pieces.append, final=False)
        summary = "".join(pieces).strip()
        # Re-encoding generated text can take more tokens than generating it did; cut it
        # back so each level is sure to shrink.
        ids = self.loaded.tokenizer(summary, add_special_tokens=False)["input_ids"]
        if len(ids) > self.map_tokens:
            summary = str(self.loaded.tokenizer.decode(ids[: self.map_tokens])).strip()
        return summary, stats

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        """Summarize, calling `on_text` with each piece of the final summary."""
        started = time.perf_counter()
        text = self.source_text
        level = 0
        try:
            while len(chunks := chunk_text(text, self.loaded.tokenizer, self.chunk_tokens)) > 1:
                level += 1
                if level > MAX_LEVELS:  # pragma: no cover - each level shrinks the text
                    raise GenerationError("the text is too long to summarize")
                summaries = []
                for done, chunk in enumerate(chunks, start=1):
                    summary, stats = self._map(chunk)
                    if stats.finish_reason == "stopped":
                        self.stats.finish_reason = "stopped"
                        return self.stats
                    summaries.append(summary)
                    if self.on_progress is not None:
                        self.on_progress(SummaryProgress(level, done, len(chunks)))
                text = "\n".join(s for s in summaries if s)

            pieces: list[str] = []

            def on_final(piece: str) -> None:
                if self.stats.first_token_seconds is None:
                    self.stats.first_token_seconds = time.perf_counter() - started
                pieces.append(piece)
                on_text(piece)

            try:
                final = self._call(text, self.params, on_final, final=True)
            finally:
                self.text = "".join(pieces)
            self.stats.finish_reason = final.finish_reason
        finally:
            self.stats.total_seconds = time.perf_counter() - started
        return self.stats

    def __call__(self) -> str:
        """The whole summary at once (for scripts and tests)."""
        self.run(lambda piece: None)
        return self.text
