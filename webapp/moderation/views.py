"""The moderation pages, for admins only: the review queue, suspensions and the audit trail
(with its CSV export)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.models import User
from webapp.accounts.permissions import staff_required
from webapp.moderation import services
from webapp.moderation.models import (
    AuditEntry,
    Direction,
    ModerationEvent,
    ReviewStatus,
    Suspension,
    VerdictAction,
)

PAGE_SIZE = 50


def _choice(request: HttpRequest, name: str, allowed: set[str], default: str = "") -> str:
    value = request.GET.get(name, default)
    return value if value in allowed else default


def _context_of(event: ModerationEvent) -> str:
    """What the text answered or was answered by: the context recorded with an input (the
    reply before a chat message), the prompt of an output."""
    if event.direction == Direction.INPUT:
        return event.context
    if event.generation is not None:
        turns = (
            event.generation.input.get("messages")
            if isinstance(event.generation.input, dict)
            else None
        )
        if isinstance(turns, list):
            users = [
                t.get("content", "")
                for t in turns
                if isinstance(t, dict) and t.get("role") == "user"
            ]
            return str(users[-1]) if users else ""
    return ""


@require_GET
@staff_required("review moderation")
def queue(request: HttpRequest) -> HttpResponse:
    status = _choice(
        request, "status", {"", "all", *ReviewStatus.values}, default=ReviewStatus.PENDING
    )
    direction = _choice(request, "direction", set(Direction.values))
    action = _choice(request, "action", {VerdictAction.FLAG, VerdictAction.BLOCK})
    categories = sorted(
        c for c in ModerationEvent.objects.values_list("category", flat=True).distinct() if c
    )
    category = _choice(request, "category", set(categories))
    events = services.review_queue(
        status="" if status == "all" else status,
        category=category,
        direction=direction,
        action=action,
    )
    one = request.GET.get("event", "")
    if one.isdigit():  # one item, whatever its status (a link from the audit trail)
        events = services.review_queue().filter(pk=int(one))
        status = "all"
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    users = {event.user_id: event.user for event in page.object_list}
    standing = {pk: services.standing(user) for pk, user in users.items()}
    items = [
        {
            "event": event,
            "context": _context_of(event),
            "phrases": "\n".join(services.suggested_phrases(event)),
            "findings": event.details.get("findings", []),
            "standing": standing[event.user_id],
        }
        for event in page.object_list
    ]
    counts = dict(
        ModerationEvent.objects.values_list("review_status").annotate(n=Count("id")).order_by()
    )
    return render(
        request,
        "moderation/queue.html",
        {
            "page": page,
            "items": items,
            "status": status,
            "direction": direction,
            "action": action,
            "category": category,
            "categories": categories,
            "statuses": [(v, label, counts.get(v, 0)) for v, label in ReviewStatus.choices],
            "query": _without_page(request),
            "tab": "queue",
        },
    )


def _without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _back(request: HttpRequest, default: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


@require_POST
@staff_required("review moderation")
def review(request: HttpRequest, event_id: int) -> HttpResponse:
    event = get_object_or_404(ModerationEvent.objects.select_related("user"), pk=event_id)
    actor = request.user
    assert isinstance(actor, User)
    decision = request.POST.get("decision", "")
    try:
        if decision == "confirm":
            services.confirm(event, actor)
            flash.success(request, f"Confirmed item #{event.pk}.")
        elif decision == "false_positive":
            phrases = request.POST.get("phrases", "").splitlines()
            added = services.mark_false_positive(event, actor, phrases)
            allowed = ", ".join(f"“{a.phrase}”" for a in added) or "nothing new"
            flash.success(request, f"Item #{event.pk} is a false positive; allowed: {allowed}.")
        elif decision == "strike":
            strike = services.add_strike(event, actor, request.POST.get("reason", ""))
            message = f"Strike added to {event.user.username}."
            if services.active_suspension(strike.user) is not None:
                message += " The account is suspended."
            flash.success(request, message)
        else:
            flash.error(request, "Choose confirm, false positive or strike.")
    except services.ModerationError as exc:
        flash.error(request, str(exc))
    return _back(request, "moderation:queue")


@require_GET
@staff_required("review moderation")
def suspensions(request: HttpRequest) -> HttpResponse:
    active = Suspension.objects.filter(lifted_at__isnull=True).select_related("user", "created_by")
    recent = Suspension.objects.filter(lifted_at__isnull=False).select_related("user", "lifted_by")[
        :50
    ]
    rows = [{"suspension": s, "strikes": services.strikes_counting(s.user).count()} for s in active]
    return render(
        request,
        "moderation/suspensions.html",
        {"rows": rows, "recent": recent, "tab": "suspensions"},
    )


@require_POST
@staff_required("review moderation")
def lift(request: HttpRequest, suspension_id: int) -> HttpResponse:
    suspension = get_object_or_404(Suspension.objects.select_related("user"), pk=suspension_id)
    actor = request.user
    assert isinstance(actor, User)
    try:
        services.lift_suspension(suspension, actor)
        flash.success(request, f"Lifted the suspension of {suspension.user.username}.")
    except services.ModerationError as exc:
        flash.error(request, str(exc))
    return redirect("moderation:suspensions")


# Readable names of the audit trail's actions (the code stays beside them, for the CSV).
ACTION_NAMES = {
    "input.allow": "input allowed",
    "input.flag": "input flagged",
    "input.block": "input blocked",
    "output.allow": "reply allowed",
    "output.flag": "reply flagged",
    "output.block": "reply blocked",
    "event.confirm": "verdict confirmed",
    "event.false_positive": "marked a false positive",
    "strike.add": "strike added",
    "suspension.create": "account suspended",
    "suspension.lift": "suspension lifted",
    "audit.export": "audit trail exported",
    "audit.purge": "old entries purged",
}
ACTION_GROUPS = [
    ("input.", "every input verdict"),
    ("output.", "every reply verdict"),
    ("event.", "every review"),
]
ROUTINE = ("input.allow", "output.allow")  # every check that found nothing


def _audit_filters(request: HttpRequest) -> dict[str, str]:
    return {
        name: request.GET.get(name, "").strip()[:150] for name in ("action", "actor", "subject")
    }


def _audit_link(entry: AuditEntry) -> str:
    """Where the entry's item can be seen: the review item, the suspensions, or the
    generation in the admin."""
    kind, pk = entry.target_type, entry.target_id
    if not pk.isdigit():
        return ""
    if kind == "moderationevent":
        return reverse("moderation:queue") + f"?event={pk}"
    if kind == "strike" and isinstance(entry.details.get("event"), int):
        return reverse("moderation:queue") + f"?event={entry.details['event']}"
    if kind == "suspension":
        return reverse("moderation:suspensions")
    if kind == "generation":
        return reverse("admin:inference_generation_change", args=[pk])
    return ""


@require_GET
@staff_required("review moderation")
def audit(request: HttpRequest) -> HttpResponse:
    filters = _audit_filters(request)
    show_routine = request.GET.get("routine") == "show"
    entries = services.audit_entries(**filters)
    if not show_routine and filters["action"] not in ROUTINE:
        entries = entries.exclude(action__in=ROUTINE)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [
        {"entry": e, "name": ACTION_NAMES.get(e.action, e.action), "link": _audit_link(e)}
        for e in page.object_list
    ]
    context: dict[str, Any] = {
        "page": page,
        "rows": rows,
        **filters,
        "show_routine": show_routine,
        "action_choices": [*ACTION_GROUPS, *ACTION_NAMES.items()],
        "query": _without_page(request),
        "tab": "audit",
    }
    return render(request, "moderation/audit.html", context)


@require_GET
@staff_required("review moderation")
def audit_csv(request: HttpRequest) -> StreamingHttpResponse:
    filters = _audit_filters(request)
    entries = services.audit_entries(**filters)
    actor = request.user
    assert isinstance(actor, User)
    services.audit(
        actor, "audit.export", "exported the audit trail as CSV", details={"filters": filters}
    )
    response = StreamingHttpResponse(
        services.audit_csv(entries), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="atelier-audit-{stamp}.csv"'
    return response
