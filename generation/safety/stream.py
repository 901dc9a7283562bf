"""Check a streamed reply as it grows, so that text the filter would block never reaches
the user.

The worker feeds each piece the model produces to `StreamChecker.feed` and sends on only
what comes back as `released`. Text is checked when a sentence ends, or once
`every_chars` characters are waiting, and released only up to the last whole word: a
word split across pieces ("ba" + "d word") is held until it is complete, and so is a
trailing run of s p a c e d letters. Each check reads `context_chars` of already released
text before the new part, so phrases across a checkpoint are still seen. On a block,
nothing more is released, and the update says how much text the user has (`safe_length`);
the worker stops generating and replaces the reply with a notice.

With `OutputCheck.END` nothing is released until `finish()`, which checks the whole reply
once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generation.safety.filter import Finding, Layer, OutputCheck, Policy, SafetyFilter, Verdict

# The end of a sentence, once the whitespace after it has arrived (so "s.p.a.c.e.d" is
# not a row of sentences).
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n")
# Single characters each followed by a separator, at the end: maybe "f u c" of "f u c k".
_TRAILING_SPACED = re.compile(r"(?:(?<=\s)|^)(?:\S[ .\-_*·•/~,:+]+){2,}\S?\s*$")


# How far back from a checkpoint spaced letters are looked for (bounded: the search is
# quadratic in it).
_SPACED_TAIL_WINDOW = 80
# Text with no whitespace is held back until it is this many times `every_chars` long.
_LONGEST_WORD = 4


@dataclass(frozen=True)
class StreamUpdate:
    released: str  # new text that is safe to send now ("" while it is held back)
    safe_length: int  # characters released so far, all updates together
    blocked: bool = False
    verdict: Verdict | None = None  # the verdict that blocked the stream


class StreamChecker:
    """One per streamed reply; not thread-safe (one generation, one thread)."""

    def __init__(
        self,
        safety: SafetyFilter,
        policy: Policy,
        *,
        every_chars: int = 160,
        context_chars: int = 100,
    ) -> None:
        if every_chars < 1 or context_chars < 0:
            raise ValueError("every_chars must be at least 1 and context_chars at least 0")
        self.safety = safety
        self.policy = policy
        self.every_chars = every_chars
        self.context_chars = context_chars
        self.text = ""  # everything fed so far
        self.safe_length = 0  # text[:safe_length] has been released
        self.checks = 0
        self.finished = False
        self._block: Verdict | None = None
        self._seen = 0  # text[:_seen] has been looked at for checkpoints
        self._findings: dict[tuple[str, object], Finding] = {}

    @property
    def blocked(self) -> bool:
        return self._block is not None

    def feed(self, piece: str) -> StreamUpdate:
        if self.finished:
            raise RuntimeError("feed() after finish()")
        if self._block is not None:
            return self._blocked_update()
        self.text += piece
        if self.policy.output_check is OutputCheck.END:
            return StreamUpdate("", self.safe_length)
        return self._advance(self._checkpoint())

    def finish(self) -> StreamUpdate:
        """The reply is complete: check what is left and release it, or block."""
        if self._block is not None or self.finished:
            self.finished = True
            return self._blocked_update() if self._block else StreamUpdate("", self.safe_length)
        self.finished = True
        return self._advance(len(self.text))

    def verdict(self) -> Verdict:
        """All findings of all checks so far as one verdict, for the audit trail."""
        return Verdict.from_findings(self._findings.values())

    def _advance(self, cut: int) -> StreamUpdate:
        if cut <= self.safe_length:
            return StreamUpdate("", self.safe_length)
        start = 0
        if self.policy.output_check is OutputCheck.STREAMING:
            start = _word_start(self.text, max(0, self.safe_length - self.context_chars))
            # ...but not ever further back when there is no whitespace (base64, a URL).
            start = max(start, self.safe_length - 2 * self.context_chars)
        verdict = self.safety.check(self.text[start:cut], self.policy).shifted(start)
        self.checks += 1
        self._remember(verdict)
        if verdict.blocked:
            self._block = verdict
            return self._blocked_update()
        released = self.text[self.safe_length : cut]
        self.safe_length = cut
        return StreamUpdate(released, self.safe_length)

    def _checkpoint(self) -> int:
        """Where the next check should end (<= safe_length: not yet). One is due when a
        sentence has ended, or `every_chars` characters have come, since the last one."""
        start = self.safe_length
        seen = max(self._seen, start)
        cut = start
        # A little before `seen`: the whitespace that ends a sentence may have just come.
        for match in _SENTENCE_END.finditer(self.text, max(start, seen - 8)):
            cut = match.end()
        if len(self.text) - seen >= self.every_chars:
            pending = self.text[start:]
            last_space = max(pending.rfind(" "), pending.rfind("\n"), pending.rfind("\t"))
            if last_space >= 0:
                cut = max(cut, start + last_space + 1)
            elif len(pending) >= _LONGEST_WORD * self.every_chars:
                cut = len(self.text)  # no space at all (a long URL, base64): check it whole
        if cut > start:
            self._seen = len(self.text)
            window = max(start, cut - _SPACED_TAIL_WINDOW)
            tail = _TRAILING_SPACED.search(self.text, window, cut)
            if tail is not None:
                cut = tail.start()
        return cut

    def _remember(self, verdict: Verdict) -> None:
        for finding in verdict.findings:
            if finding.layer is Layer.RULES:
                self._findings[(finding.rule_id or "", finding.span)] = finding
            else:  # a classifier: keep its highest score over the checks
                key = (finding.classifier or "", None)
                known = self._findings.get(key)
                if known is None or finding.score > known.score:
                    self._findings[key] = finding

    def _blocked_update(self) -> StreamUpdate:
        return StreamUpdate("", self.safe_length, blocked=True, verdict=self._block)


def _word_start(text: str, index: int) -> int:
    """`index`, moved back to the start of the word it falls in."""
    while index > 0 and not text[index - 1].isspace():
        index -= 1
    return index
