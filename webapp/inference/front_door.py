"""The front door: the one way onto the generation road, for every front end (chat, the
studio pages, batch jobs, the API).

`submit` decides whether this user may run this task on this model now (account, suspension,
model access, the limit of requests in progress), screens the input under the user's
content policy, stores the queued Generation and wakes a worker once the transaction
commits. Every "no" is a `refusals.Refused` with a stable code and a message for the user;
each front end translates them in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from generation.safety import Verdict
from generation.specs import SamplingParams, Task
from webapp.accounts.models import User
from webapp.accounts.services import generation_limit
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model
from webapp.inference import services
from webapp.inference.models import Generation, Priority, Status
from webapp.inference.refusals import (
    InputBlocked,
    InvalidInput,
    LimitReached,
    NotAllowed,
    Suspended,
)
from webapp.moderation import services as moderation


@dataclass(frozen=True)
class Screened:
    """A text of the request that reaches the model and is checked on the way in."""

    text: str
    task: str  # how the check is labelled for reviewers, e.g. "chat" or "chat:system"
    context: str = ""  # what the text answers (the reply before a chat message)


def check_can_generate(user: User, priority: int = Priority.INTERACTIVE) -> None:
    """Refuse pending or disabled accounts (NotAllowed), suspended ones (Suspended) and,
    for interactive requests, users at their limit of requests in progress (LimitReached).
    Background work (batch items, titles) waits in the queue instead of counting."""
    if not user.can_generate:
        raise NotAllowed(user.why_cannot_generate)
    suspension = moderation.active_suspension(user)
    if suspension is not None:
        raise Suspended(moderation.suspension_message(suspension))
    if priority == Priority.INTERACTIVE:
        check_concurrency(user)


def check_concurrency(user: User) -> None:
    """Refuse a new interactive generation when the user is at their limit."""
    limit = generation_limit(user)
    busy = Generation.objects.filter(
        user=user, status__in=[Status.QUEUED, Status.RUNNING], priority=Priority.INTERACTIVE
    ).count()
    if busy >= limit:
        raise LimitReached(
            f"You already have {busy} repl{'y' if busy == 1 else 'ies'} in progress, "
            f"your limit; wait for one to finish or stop it."
        )


def model_for(user: User, task: str, model: ModelEntry | int | None) -> ModelEntry:
    """The catalog entry the request names (an entry, its id, or None for the task's
    default), if it is enabled, serves the task and the user may use it; ModelUnavailable
    otherwise."""
    return usable_model(user, task, model.pk if isinstance(model, ModelEntry) else model)


def screen(user: User, texts: Sequence[Screened]) -> moderation.Checked:
    """Check each text under the user's policy (every check is recorded); the most severe
    verdict decides. InputBlocked when it blocks: the caller queues nothing."""
    checks = [
        moderation.check_input(user, t.text, task=t.task, context=t.context)
        for t in texts
        if t.text.strip()
    ]
    if not checks:
        return moderation.Checked(Verdict.from_findings(()), "", ())  # nothing to check
    worst = max(checks, key=lambda c: c.verdict.action.severity)  # the first of equals
    # The deciding check's event first: `checked.event` is the verdict that decided.
    events = worst.events + tuple(e for c in checks if c is not worst for e in c.events)
    checked = moderation.Checked(worst.verdict, worst.policy, events)
    if checked.blocked:
        raise InputBlocked(
            moderation.input_notice(checked.category), category=checked.category, checked=checked
        )
    return checked


# Tasks whose params are the caller's sampling choice; the others (summaries,
# translations, ...) run greedy with the worker's defaults when params are empty.
SAMPLED_TASKS = {Task.CHAT.value}


def with_model_defaults(entry: ModelEntry, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """A chat request's sampling parameters, complete: what it set, else the model's
    defaults, else Atelier's (ATELIER_DEFAULT_MAX_TOKENS for the length)."""
    if task not in SAMPLED_TASKS:
        return params
    merged = {
        "max_new_tokens": settings.ATELIER_DEFAULT_MAX_TOKENS,
        **entry.sampling_defaults(),
        **params,
    }
    try:
        return SamplingParams.from_dict(merged).to_dict()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Invalid sampling parameters: {exc}.") from None


def submit(
    user: User,
    *,
    task: str,
    model: ModelEntry | int | None,
    input: dict[str, Any],
    params: dict[str, Any] | None = None,
    screened: Sequence[Screened] = (),
    priority: Priority = Priority.INTERACTIVE,
    model_task: str | None = None,
) -> Generation:
    """Queue a generation of `task` on `model` for `user`, once it has passed every check:
    who may generate, the model, and the content policy on the `screened` texts (those of
    `input` that reach the model and are new). Raises a `refusals.Refused`; a blocked
    input (InputBlocked) stores nothing but its verdict, for review. Inside the caller's
    transaction when there is one: the worker is woken when it commits. `model_task`: the
    catalog task of the model when it is not `task` (a conversation's title is written by
    a chat model)."""
    check_can_generate(user, priority)
    entry = model_for(user, model_task or task, model)
    params = with_model_defaults(entry, task, params or {})
    checked = screen(user, screened)
    with transaction.atomic(savepoint=False):
        generation = services.create_generation(
            user=user,
            model=entry,
            task=task,
            input=input,
            params=params,
            priority=priority,
        )
        moderation.link(checked, generation_id=generation.pk)
    return generation
