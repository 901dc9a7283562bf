"""The front door: the one way onto the generation road, for every front end (chat, the
studio pages, batch jobs, the API).

`submit` decides whether this user may run this task on this model now (account, suspension,
model access, the limit of requests in progress, the quotas of `accounts.quotas`), screens
the input under the user's content policy, stores the queued Generation and wakes a worker
once the transaction commits. Every "no" is a `refusals.Refused` with a stable code and a
message for the user; each front end translates them in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from generation.safety import Verdict
from generation.specs import SamplingParams, Task
from webapp.accounts import quotas
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model
from webapp.inference import services
from webapp.inference.models import Generation, Priority, Source
from webapp.inference.refusals import (
    InputBlocked,
    InvalidInput,
    NotAllowed,
    Refused,
    Suspended,
)
from webapp.inference.signals import request_refused
from webapp.moderation import services as moderation


@dataclass(frozen=True)
class Screened:
    """A text of the request that reaches the model and is checked on the way in."""

    text: str
    task: str  # how the check is labelled for reviewers, e.g. "chat" or "chat:system"
    context: str = ""  # what the text answers (the reply before a chat message)


def check_can_generate(user: User, priority: int = Priority.INTERACTIVE) -> None:
    """Refuse pending or disabled accounts (NotAllowed), suspended ones (Suspended), and
    requests the user's limits do not allow now (`quotas.check`: LimitReached for
    interactive requests at the limit of requests in progress, QuotaExceeded). Background
    work (batch items, titles) waits in the queue instead of counting in progress."""
    check_account(user)
    quotas.check(user, interactive=priority == Priority.INTERACTIVE)


def check_account(user: User) -> None:
    """Refuse pending or disabled accounts (NotAllowed) and suspended ones (Suspended)."""
    if not user.can_generate:
        raise NotAllowed(user.why_cannot_generate)
    suspension = moderation.active_suspension(user)
    if suspension is not None:
        raise Suspended(moderation.suspension_message(suspension))


@dataclass(frozen=True)
class Origin:
    """The front door a request comes through, for the usage ledger."""

    source: Source = Source.WEB
    api_key_id: int | None = None


_origin: ContextVar[Origin | None] = ContextVar("front_door_origin", default=None)


def current_origin() -> Origin:
    return _origin.get() or Origin()


@contextmanager
def origin(source: Source, api_key_id: int | None = None) -> Iterator[None]:
    """Within this block (and the threads `sync_to_async` runs it on), requests are
    recorded as coming through `source` (with that API key): the API's views are wrapped
    in it, so the studio services they share with the pages need not know."""
    token = _origin.set(Origin(source, api_key_id))
    try:
        yield
    finally:
        _origin.reset(token)


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
    source: Source | None = None,
    counted: bool = True,
) -> Generation:
    """Queue a generation of `task` on `model` for `user`, once it has passed every check:
    who may generate, the user's limits and quotas, the model, and the content policy on
    the `screened` texts (those of `input` that reach the model and are new). Raises a
    `refusals.Refused`; a blocked input (InputBlocked) stores nothing but its verdict, for
    review. Inside the caller's transaction when there is one: the worker is woken when it
    commits. `model_task`: the catalog task of the model when it is not `task` (a
    conversation's title is written by a chat model). `source`: the front door, when it is
    not the current `origin`. `counted=False`: no quota refuses it (the studio's own
    follow-ups); its tokens are still in the ledger."""
    try:
        return _submit(
            user, task, model, input, params, screened, priority, model_task, source, counted
        )
    except Refused as refused:
        request_refused.send_robust(sender=None, task=task, code=refused.code)
        raise


def _submit(
    user: User,
    task: str,
    model: ModelEntry | int | None,
    input: dict[str, Any],
    params: dict[str, Any] | None,
    screened: Sequence[Screened],
    priority: Priority,
    model_task: str | None,
    source: Source | None,
    counted: bool,
) -> Generation:
    interactive = priority == Priority.INTERACTIVE
    check_account(user)
    entry = model_for(user, model_task or task, model)
    params = with_model_defaults(entry, task, params or {})
    checked = screen(user, screened)
    came = current_origin()

    def queue() -> Generation:
        if counted:
            # Counted under the user's lock, so requests arriving together are counted one
            # by one: the lock is held until the transaction that stores the row commits.
            quotas.hold(user)
            quotas.check(user, interactive=interactive)
        generation = services.create_generation(
            user=user,
            model=entry,
            task=task,
            input=input,
            params=params,
            priority=priority,
            source=source or came.source,
            api_key_id=came.api_key_id if source in (None, came.source) else None,
            reserved_tokens=quotas.reservation(task, input, params),
        )
        moderation.link(checked, generation_id=generation.pk)
        return generation

    if transaction.get_connection().in_atomic_block:
        # The caller's transaction: a refusal leaves it usable (no inner block ends in it).
        return queue()
    with transaction.atomic():
        return queue()
