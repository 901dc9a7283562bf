"""A request that cannot be stored for want of disk space gets a page saying so (507),
never a 500: a multipart form whose files Django spools to a full temporary folder
(FILE_UPLOAD_TEMP_DIR), or a view whose write a full database disk refuses. Nothing of
that request is kept; what was stored before is untouched. The API answers the same
faults in its own shape (webapp.api.endpoint)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render

from webapp.inference import uploads

log = logging.getLogger(__name__)


def no_room_page(request: HttpRequest) -> HttpResponse:
    return render(request, "errors/507.html", status=507)


def discard_partial_uploads(request: HttpRequest) -> None:
    """Delete what Django had spooled of the request's files when the disk filled up: the
    parser leaves the temporary file open (and on disk) until it is garbage collected."""
    for handler in getattr(request, "_upload_handlers", None) or []:
        partial = getattr(handler, "file", None)
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.close()  # a TemporaryUploadedFile deletes itself on close


class NoRoomMiddleware:
    """Placed before CsrfViewMiddleware, which is the first to read a form's body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if request.method != "POST" or request.content_type != "multipart/form-data":
            return None
        if getattr(view, "csrf_exempt", False):
            return None  # the API reads its own body and answers in OpenAI's shape
        try:
            request.FILES  # noqa: B018 - parsed here, where a full disk can be answered
        except OSError as exc:
            if not uploads.out_of_space(exc):
                raise
            log.error("no room to receive a form's files for %s: %s", request.path, exc)
            discard_partial_uploads(request)
            return no_room_page(request)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not uploads.out_of_space(exception):
            return None
        log.error("no room to store what %s %s sent: %s", request.method, request.path, exception)
        return no_room_page(request)
