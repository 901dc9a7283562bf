"""Stream text from an RNN language model, one character at a time, like `TokenStream`.

Same parameters (`SamplingParams`: temperature 0 for greedy, top_p, max_new_tokens, seed,
stop sequences), same stop flag (`should_stop`, polled before each step), same statistics
(`StreamStats`), and the same rule for stop sequences: text that may be the start of one is
held back until it is certain, and a stop sequence is never handed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from generation.rnn.loading import LoadedRNN
from generation.rnn.model import State
from generation.rnn.vocab import CharVocab
from generation.specs import SamplingParams
from generation.streaming import StreamStats, _first_stop, _held_back


class RNNStream:
    """Text pieces as the model produces them: `run(on_text)`.

    `prompt_ids` are the prompt's ids (`loaded.vocab.encode(text)`, e.g. of
    `chat_to_prompt(messages)`); the text produced continues it. There is no end-of-text
    token, so `stats.finish_reason` is "length", "stop_sequence" or "stopped".
    """

    def __init__(
        self,
        loaded: LoadedRNN,
        prompt_ids: list[int],
        params: SamplingParams,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.loaded = loaded
        self.prompt_ids = prompt_ids
        self.params = params
        self.should_stop = should_stop
        self.stats = StreamStats(prompt_tokens=len(prompt_ids))
        self.text = ""  # the text handed out so far

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        """Generate in this thread, calling `on_text` with each new piece of text.
        Exceptions from the model or from on_text propagate."""
        started = time.perf_counter()
        generator = torch.Generator()
        if self.params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.params.seed)
        stops = self.params.stop
        longest = max(map(len, stops), default=0)
        vocab = self.loaded.vocab
        text = ""  # everything generated, including what is held back
        cut = requested = False
        try:
            with torch.inference_mode():
                ids = self._first_ids(vocab)
                state: State | None = None
                for step in range(self.params.max_new_tokens):
                    if self.should_stop():
                        requested = True
                        break
                    logits, state = self._forward(ids, state)
                    token = _pick(logits, self.params, generator, vocab.unknown_id)
                    ids = [token]
                    text += vocab.decode([token])
                    self.stats.completion_tokens = step + 1
                    if self.stats.first_token_seconds is None:
                        self.stats.first_token_seconds = time.perf_counter() - started
                    if stops:
                        at = _first_stop(text, stops, start=max(0, len(self.text) - longest))
                        if at is not None:
                            cut = True
                            self._send(text[:at], on_text)
                            break
                    self._send(text[: len(text) - _held_back(text, stops)], on_text)
            if not cut:  # text held back for a stop sequence that never came
                self._send(text, on_text)
        finally:
            self.stats.total_seconds = time.perf_counter() - started
        if cut:
            self.stats.finish_reason = "stop_sequence"
        elif requested:
            self.stats.finish_reason = "stopped"
        else:
            self.stats.finish_reason = "length"
        return self.stats

    def _first_ids(self, vocab: CharVocab) -> list[int]:
        # With no prompt, start as at the beginning of a line.
        return self.prompt_ids or vocab.encode("\n")

    def _forward(self, ids: list[int], state: State | None) -> tuple[torch.Tensor, State]:
        """The logits for the character after `ids`, and the state after them."""
        batch = torch.tensor([ids], dtype=torch.long, device=self.loaded.device)
        logits, state = self.loaded.model(batch, state)
        return logits[0, -1], state

    def _send(self, text: str, on_text: Callable[[str], None]) -> None:
        if len(text) > len(self.text):
            piece = text[len(self.text) :]
            self.text = text
            on_text(piece)


def _pick(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator, unknown_id: int
) -> int:
    """The next id: greedy at temperature 0, else sampled from the top_p nucleus.
    The unknown id stands for no character and is never picked."""
    logits = logits.float().cpu().clone()
    logits[unknown_id] = float("-inf")
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        # Keep the most probable ids until their mass reaches top_p (always the first one).
        keep = ordered.cumsum(0) - ordered < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
