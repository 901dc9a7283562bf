"""The /v1/files and /v1/batches endpoints (see `batches`)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, JsonResponse

from webapp.api import batches
from webapp.api.endpoint import ApiRequest, api_view, json_body
from webapp.api.errors import ApiError, bad_field


@api_view("GET", "POST")
async def files(request: ApiRequest) -> HttpResponseBase:
    user = request.api_user
    if request.method == "GET":
        rows = await sync_to_async(
            lambda: [batches.file_object(f) for f in batches.ApiFile.objects.filter(user=user)]
        )()
        return JsonResponse({"object": "list", "data": rows, "has_more": False})
    upload = request.FILES.get("file")
    if upload is None:
        raise ApiError(
            400,
            "'file' is required (multipart/form-data).",
            code="missing_required_parameter",
            param="file",
        )
    purpose = request.POST.get("purpose", "")
    if upload.size is not None and upload.size > settings.ATELIER_JOB_MAX_UPLOAD_BYTES:
        raise ApiError(
            413,
            f"The file is larger than {settings.ATELIER_JOB_MAX_UPLOAD_BYTES} bytes.",
            code="file_too_large",
            param="file",
        )
    data = upload.read()
    created = await sync_to_async(batches.upload)(
        user, filename=upload.name or "", purpose=purpose, data=data
    )
    return JsonResponse(batches.file_object(created))


@api_view("GET", "DELETE")
async def file_detail(request: ApiRequest, file_id: str) -> HttpResponseBase:
    found = await sync_to_async(batches.file_for)(request.api_user, file_id)
    if request.method == "DELETE":
        await sync_to_async(found.delete)()
        return JsonResponse({"id": file_id, "object": "file", "deleted": True})
    return JsonResponse(batches.file_object(found))


@api_view("GET")
async def file_content(request: ApiRequest, file_id: str) -> HttpResponseBase:
    found = await sync_to_async(batches.file_for)(request.api_user, file_id)
    response = HttpResponse(bytes(found.data), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{found.filename}"'
    return response


@api_view("GET", "POST")
async def batches_(request: ApiRequest) -> HttpResponseBase:
    user = request.api_user
    if request.method == "GET":
        raw = request.GET.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise bad_field("limit", "'limit' must be a whole number from 1 to 100.")
        rows, more = await sync_to_async(batches.batches_of)(
            user, after=request.GET.get("after"), limit=int(raw)
        )
        data = await sync_to_async(
            lambda: [batches.batch_object(batches.refreshed(b)) for b in rows]
        )()
        return JsonResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )
    body = json_body(request)
    unknown = set(body) - {"input_file_id", "endpoint", "completion_window", "metadata"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(
            400,
            f"Unrecognized request argument supplied: {name}",
            code="unknown_parameter",
            param=name,
        )
    for name in ("input_file_id", "endpoint"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise ApiError(
                400, f"'{name}' is required.", code="missing_required_parameter", param=name
            )
    created = await sync_to_async(batches.create)(
        user,
        input_file_id=body["input_file_id"],
        endpoint=body["endpoint"],
        completion_window=body.get("completion_window") or batches.COMPLETION_WINDOW,
        metadata=body.get("metadata"),
    )
    return JsonResponse(
        await sync_to_async(lambda: batches.batch_object(batches.refreshed(created)))()
    )


@api_view("GET")
async def batch_detail(request: ApiRequest, batch_id: str) -> HttpResponseBase:
    def answer() -> dict[str, object]:
        return batches.batch_object(
            batches.refreshed(batches.batch_for(request.api_user, batch_id))
        )

    return JsonResponse(await sync_to_async(answer)())


@api_view("POST")
async def cancel_batch(request: ApiRequest, batch_id: str) -> HttpResponseBase:
    def answer() -> dict[str, object]:
        return batches.batch_object(batches.cancel(batches.batch_for(request.api_user, batch_id)))

    return JsonResponse(await sync_to_async(answer)())
