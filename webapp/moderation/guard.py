"""The output guard: a streamed reply checked as it grows, under its user's policy.

How the worker uses it, for each generation it runs::

    guard = OutputGuard.for_generation(generation)
    for piece in pieces_from_the_model:          # e.g. TokenStream.run's callback
        released = guard.feed(piece)             # text safe to send now; may be ""
        if released:
            send(released)
        if guard.blocked:                        # stop generating: the rest is withheld
            break
    if not guard.blocked:
        rest = guard.finish()                    # the held-back tail, checked
        if rest:
            send(rest)
    if guard.blocked:
        # status "blocked"; the stored and shown reply is `guard.notice`, not the text
        output = guard.notice
    guard.record(generation.pk)                  # the verdict: audit, and the review queue

Only released text may reach the user (`released` pieces and `finish()`'s tail); what was
fed but not released is withheld for good once `blocked` is set. Under a policy that
checks at the end, `feed` always returns "" and `finish` returns the whole reply once it
has passed. `record` stores the whole text, withheld part included, for the reviewer.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from generation.safety import SafetyFilter, StreamChecker, StreamUpdate, TextClassifier, Verdict
from webapp.accounts.models import User
from webapp.inference.models import Generation
from webapp.moderation import config, services
from webapp.moderation.models import Direction, ModerationEvent


class OutputGuard:
    """One per generation; not thread-safe (one generation, one thread)."""

    def __init__(
        self,
        user: User,
        task: str,
        named: config.NamedPolicy,
        safety: SafetyFilter,
        *,
        every_chars: int | None = None,
    ) -> None:
        self.user = user
        self.task = task
        self.policy_name = named.name
        # Small steps keep the reply streaming: text is held only until its words are
        # whole and checked (a sentence end also releases at once).
        step = every_chars or settings.ATELIER_OUTPUT_CHECK_CHARS
        self.checker = StreamChecker(safety, named.policy, every_chars=step)
        self._recorded = False
        self._blocked: Verdict | None = None

    @classmethod
    def for_generation(
        cls,
        generation: Generation,
        named: config.NamedPolicy | None = None,
        models: Sequence[TextClassifier] = (),
    ) -> OutputGuard:
        """A guard with the policy that applies to the generation's user now (or `named`),
        checking with the policy's moderation `models` too (loaded by the worker)."""
        user = generation.user
        named = named or config.policy_for(user)
        safety = config.current().safety
        return cls(user, generation.task, named, safety.with_models(models) if models else safety)

    @property
    def streaming(self) -> bool:
        """False when the policy checks only the finished reply (nothing is released
        before finish())."""
        return str(self.checker.policy.output_check) == "streaming"

    def feed(self, piece: str) -> str:
        """Add a piece of the reply; returns the text that may be sent now ("" while it is
        held back, and always after a block)."""
        return self._take(self.checker.feed(piece))

    def finish(self) -> str:
        """The reply is complete: returns the rest that may be sent ("" if blocked)."""
        return self._take(self.checker.finish())

    def _take(self, update: StreamUpdate) -> str:
        if update.blocked and self._blocked is None:
            self._blocked = update.verdict
        return update.released

    @property
    def blocked(self) -> Verdict | None:
        """The verdict that blocked the reply, or None."""
        return self._blocked

    @property
    def released_text(self) -> str:
        return self.checker.text[: self.checker.safe_length]

    @property
    def notice(self) -> str:
        """What the user sees instead of a blocked reply ("" when not blocked)."""
        verdict = self.blocked
        return services.notice_for(verdict, direction=Direction.OUTPUT) if verdict else ""

    def verdict(self) -> Verdict:
        return self.blocked or self.checker.verdict()

    def record(self, generation_id: int) -> ModerationEvent | None:
        """Store the verdict (once): audited always, an event for the review queue when
        flagged or blocked. Call it after the last feed or finish, in the worker."""
        if self._recorded:
            return None
        self._recorded = True
        return services.record_verdict(
            self.user,
            self.verdict(),
            direction=Direction.OUTPUT,
            task=self.task,
            text=self.checker.text,
            policy=self.policy_name,
            generation_id=generation_id,
        )
