"""/metrics for Prometheus, and the staff's Operations page with its JSON."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from webapp.accounts.permissions import staff_required
from webapp.operations import exposition, overview
from webapp.operations.access import Access, metrics_access


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    access = metrics_access(request)
    if access is Access.CLOSED:
        raise Http404
    if access is Access.DENIED:
        raise PermissionDenied("A bearer token or an allowed address is needed for /metrics.")
    return HttpResponse(exposition.render(), content_type=CONTENT_TYPE_LATEST)


@require_GET
@staff_required("see the operations page")
def operations(request: HttpRequest) -> HttpResponse:
    return render(request, "operations/page.html", {"state": overview.snapshot()})


@require_GET
@never_cache
@staff_required("see the operations page")
def operations_state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(overview.snapshot())
