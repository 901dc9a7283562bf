"""Moderation actions: check a text and record the verdict, review flagged and blocked
items, strikes and suspensions, and the audit trail that records all of them.

Every verdict (allowed ones too) and every admin action writes one `AuditEntry`; flagged
and blocked texts also get a `ModerationEvent`, which is what the review queue lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain
from typing import Any

from django.conf import settings
from django.db import models as db
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from generation.safety import Action, RuleError, RuleSet, Verdict
from webapp.accounts.models import User
from webapp.csv_lines import csv_lines, safe_cell
from webapp.moderation import config
from webapp.moderation.models import (
    AllowedPhrase,
    AuditEntry,
    Direction,
    ModerationEvent,
    ReviewStatus,
    Strike,
    Suspension,
)
from webapp.operations import metrics

SYSTEM = "system"


class ModerationError(Exception):
    """An action that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Checked:
    """A verdict and where it was recorded: `events` holds the flagged and blocked
    checks (none for an allowed text)."""

    verdict: Verdict
    policy: str
    events: tuple[ModerationEvent, ...] = ()

    @property
    def event(self) -> ModerationEvent | None:
        """The event of the (first) text checked; None when it was allowed."""
        return self.events[0] if self.events else None

    @property
    def blocked(self) -> bool:
        return self.verdict.blocked

    @property
    def flagged(self) -> bool:
        return self.verdict.flagged

    @property
    def category(self) -> str:
        return self.verdict.category or ""


# --- Checking ---------------------------------------------------------------------------


def check_input(
    user: User,
    text: str,
    *,
    task: str,
    context: str = "",
    generation_id: int | None = None,
) -> Checked:
    """Check a text a user sends to a model under the user's policy; record the verdict
    (an event when flagged or blocked, with `context`: what the text answers, for the
    reviewer) and audit it. The caller refuses a blocked text."""
    in_force = config.current()
    named = config.policy_for(user, in_force)
    verdict = in_force.safety.check(text, named.policy)
    event = record_verdict(
        user,
        verdict,
        direction=Direction.INPUT,
        task=task,
        text=text,
        context=context,
        policy=named.name,
        generation_id=generation_id,
    )
    return Checked(verdict, named.name, () if event is None else (event,))


def record_verdict(
    user: User,
    verdict: Verdict,
    *,
    direction: str,
    task: str,
    text: str,
    policy: str,
    context: str = "",
    generation_id: int | None = None,
) -> ModerationEvent | None:
    """Audit a verdict; store flagged and blocked ones as events for the review queue."""
    metrics.moderation_verdict(direction, str(verdict.action), verdict.category)
    event = None
    if verdict.action is not Action.ALLOW:
        event = ModerationEvent.objects.create(
            user=user,
            direction=direction,
            task=task,
            text=text,
            context=context,
            generation_id=generation_id,
            action=str(verdict.action),
            category=verdict.category or "",
            score=verdict.score,
            explanation=verdict.explanation,
            details=verdict.to_dict(),
            policy=policy[:300],
        )
    if event is not None:
        target_type, target_id = "moderationevent", str(event.pk)
    elif generation_id is not None:
        target_type, target_id = "generation", str(generation_id)
    else:
        target_type, target_id = "", ""
    category = f" ({verdict.category})" if verdict.category else ""
    audit(
        None,
        f"{direction}.{verdict.action}",
        f"{task} {direction} {verdict.action}{category}: {verdict.explanation}",
        target_type=target_type,
        target_id=target_id,
        subject=user,
        details={
            "verdict": verdict.to_dict(),
            "policy": policy,
            "generation": generation_id,
            "task": task,
        },
    )
    return event


def link(checked: Checked, *, generation_id: int) -> None:
    """Attach the generation queued after the check to its events."""
    ids = [event.pk for event in checked.events]
    if ids:
        ModerationEvent.objects.filter(pk__in=ids).update(generation_id=generation_id)
        for event in checked.events:
            event.generation_id = generation_id


def input_notice(category: str) -> str:
    """What the user is told of a text the content policy kept from the model: in the chat,
    on the studio pages, on a batch job's item and in place of a reply whose input a
    moderation model blocked on the worker."""
    return (
        f"Blocked by the content policy ({category or 'content'}): it was not sent to the "
        "model and is kept for review by an administrator."
    )


def notice_for(verdict: Verdict, *, direction: str) -> str:
    category = verdict.category or "content"
    if direction == Direction.INPUT:
        return input_notice(category)
    return (
        f"This reply was withheld because it broke the content policy ({category}). "
        "It is kept for review by an administrator."
    )


# --- Suspensions ------------------------------------------------------------------------


def active_suspension(user: User) -> Suspension | None:
    if not user.is_authenticated or user.pk is None:
        return None
    return Suspension.objects.filter(user=user, lifted_at__isnull=True).first()


def suspension_message(suspension: Suspension) -> str:
    return (
        "Your account is suspended and cannot generate anything: "
        f"{suspension.reason} An administrator can lift the suspension."
    )


def suspend(user: User, reason: str, actor: User | None = None) -> Suspension:
    """Suspend the account (the active suspension if there is one already)."""
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()  # one at a time per user
        existing = active_suspension(user)
        if existing is not None:
            return existing
        suspension = Suspension.objects.create(user=user, reason=reason, created_by=actor)
        audit(
            actor,
            "suspension.create",
            f"suspended {user.username}: {reason}",
            target=suspension,
            subject=user,
        )
    return suspension


def lift_suspension(suspension: Suspension, actor: User) -> Suspension:
    if suspension.lifted_at is not None:
        raise ModerationError("This suspension has already been lifted.")
    suspension.lifted_at = timezone.now()
    suspension.lifted_by = actor
    suspension.save(update_fields=["lifted_at", "lifted_by"])
    audit(
        actor,
        "suspension.lift",
        f"lifted the suspension of {suspension.user.username}",
        target=suspension,
        subject=suspension.user,
    )
    return suspension


def strikes_counting(user: User) -> QuerySet[Strike]:
    """The strikes that count towards a suspension: within the window, and after the
    last suspension was lifted (lifting starts the count afresh)."""
    since = timezone.now() - timedelta(days=settings.ATELIER_STRIKE_WINDOW_DAYS)
    last_lift = (
        Suspension.objects.filter(user=user, lifted_at__isnull=False)
        .aggregate(last=db.Max("lifted_at"))
        .get("last")
    )
    if last_lift is not None and last_lift > since:
        since = last_lift
    return Strike.objects.filter(user=user, created_at__gt=since)


@dataclass(frozen=True)
class Standing:
    strikes: int  # counting towards a suspension
    suspended: bool


def standing(user: User) -> Standing:
    return Standing(strikes_counting(user).count(), active_suspension(user) is not None)


# --- Review -----------------------------------------------------------------------------


def review_queue(
    *, status: str = "", category: str = "", direction: str = "", action: str = ""
) -> QuerySet[ModerationEvent]:
    events = ModerationEvent.objects.select_related("user", "reviewed_by", "generation")
    if status:
        events = events.filter(review_status=status)
    if category:
        events = events.filter(category=category)
    if direction:
        events = events.filter(direction=direction)
    if action:
        events = events.filter(action=action)
    return events


def _reviewed(event: ModerationEvent, actor: User, status: str) -> None:
    event.review_status = status
    event.reviewed_by = actor
    event.reviewed_at = timezone.now()
    event.save(update_fields=["review_status", "reviewed_by", "reviewed_at"])


def confirm(event: ModerationEvent, actor: User) -> None:
    """The verdict was right (no strike: see add_strike)."""
    _reviewed(event, actor, ReviewStatus.CONFIRMED)
    audit(
        actor,
        "event.confirm",
        f"confirmed {event.direction} {event.action} ({event.category})",
        target=event,
        subject=event.user,
    )


def suggested_phrases(event: ModerationEvent) -> list[str]:
    """What to allow for a false positive: the words that drove each finding that flagged
    or blocked the text (a rule's matched text, a classifier's top words)."""
    phrases: list[str] = []
    for finding in event.details.get("findings", []):
        if finding.get("action") == Action.ALLOW:
            continue
        words = finding.get("words") or []
        if finding.get("layer") == "classifier":
            words = words[:3]
        phrases.extend(" ".join(str(w).split()) for w in words)
    return [p for p in dict.fromkeys(phrases) if p]


def mark_false_positive(
    event: ModerationEvent, actor: User, phrases: Iterable[str]
) -> list[AllowedPhrase]:
    """The verdict was wrong: allow these phrases from now on (the same text then passes)."""
    cleaned = [" ".join(p.split()) for p in phrases]
    cleaned = [p for p in dict.fromkeys(cleaned) if p]
    for phrase in cleaned:
        if len(phrase) > 200:
            raise ModerationError(f"An allowed phrase is limited to 200 characters: {phrase!r}.")
        try:
            RuleSet((), [phrase])
        except RuleError as exc:
            raise ModerationError(f"Cannot allow {phrase!r}: {exc}") from exc
    added = []
    with transaction.atomic():
        for phrase in cleaned:
            allowed, created = AllowedPhrase.objects.get_or_create(
                phrase=phrase,
                defaults={"created_by": actor, "source_event": event, "note": "false positive"},
            )
            if created:
                added.append(allowed)
        _reviewed(event, actor, ReviewStatus.FALSE_POSITIVE)
        audit(
            actor,
            "event.false_positive",
            f"marked {event.direction} {event.action} ({event.category}) a false positive"
            + (f"; allowed: {', '.join(cleaned)}" if cleaned else ""),
            target=event,
            subject=event.user,
            details={"allowed": cleaned},
        )
    return added


def add_strike(event: ModerationEvent, actor: User, reason: str = "") -> Strike:
    """Confirm the event and strike its user; enough strikes in the window suspend them."""
    with transaction.atomic():
        if event.review_status != ReviewStatus.CONFIRMED:
            _reviewed(event, actor, ReviewStatus.CONFIRMED)
        reason = reason.strip() or f"{event.direction} {event.action} ({event.category})"
        strike = Strike.objects.create(
            user=event.user, event=event, reason=reason[:300], created_by=actor
        )
        audit(
            actor,
            "strike.add",
            f"strike on {event.user.username}: {reason}",
            target=strike,
            subject=event.user,
            details={"event": event.pk},
        )
        count = strikes_counting(event.user).count()
        limit = settings.ATELIER_STRIKES_TO_SUSPEND
        if limit > 0 and count >= limit:
            suspend(
                event.user,
                f"{count} confirmed content-policy strikes within "
                f"{settings.ATELIER_STRIKE_WINDOW_DAYS} days.",
            )
    return strike


# --- Audit ------------------------------------------------------------------------------


def audit(
    actor: User | None,
    action: str,
    summary: str,
    *,
    target: db.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    subject: User | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    if target is not None:
        target_type = target._meta.model_name or ""
        target_id = str(target.pk)
    return AuditEntry.objects.create(
        actor=actor,
        actor_name=actor.username if actor is not None else SYSTEM,
        action=action,
        target_type=target_type,
        target_id=target_id,
        subject=subject,
        subject_name=subject.username if subject is not None else "",
        summary=summary[:500],
        details=details or {},
    )


def audit_entries(*, action: str = "", actor: str = "", subject: str = "") -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.all()
    if action:
        entries = entries.filter(action__startswith=action)
    if actor:
        entries = entries.filter(actor_name=actor)
    if subject:
        entries = entries.filter(subject_name=subject)
    return entries


CSV_COLUMNS = ("time", "actor", "action", "target_type", "target_id", "user", "summary")


def audit_csv(entries: QuerySet[AuditEntry]) -> Iterator[str]:
    """The entries as CSV lines, header first (streamed: the trail may be long)."""
    rows = (
        [
            safe_cell(value)
            for value in (
                entry.created_at.isoformat(),
                entry.actor_name,
                entry.action,
                entry.target_type,
                entry.target_id,
                entry.subject_name,
                entry.summary,
            )
        ]
        for entry in entries.order_by("created_at", "id").iterator(chunk_size=1000)
    )
    return csv_lines(chain([CSV_COLUMNS], rows))


def purge_audit(days: int | None = None, actor: User | None = None) -> int:
    """Delete audit entries older than the retention (ATELIER_AUDIT_RETENTION_DAYS); the
    purge itself is audited. Returns how many were deleted."""
    keep_days = settings.ATELIER_AUDIT_RETENTION_DAYS if days is None else days
    if keep_days < 1:
        raise ModerationError("The audit retention must be at least one day.")
    cutoff = timezone.now() - timedelta(days=keep_days)
    deleted, _ = AuditEntry.objects.filter(created_at__lt=cutoff).delete()
    audit(
        actor,
        "audit.purge",
        f"deleted {deleted} audit entries older than {keep_days} days",
        details={"deleted": deleted, "cutoff": cutoff.isoformat()},
    )
    return deleted
