"""Server-sent events of a streamed completion: `data: {chunk}` lines ending with
`data: [DONE]`; while a request waits in the queue, comments with its position
(`: queue {"position": 2, ...}`) and keep-alive comments, which every SSE client skips.

The client going away cancels the iterator (Django's ASGI handler does so on
http.disconnect): its generations are stopped, and the model is freed at the next step."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse

from webapp.api import shapes
from webapp.api.following import Follower
from webapp.inference.models import Status

DONE = "data: [DONE]\n\n"


def data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def comment(text: str) -> str:
    return f": {text}\n\n"


def response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    answer = StreamingHttpResponse(events, content_type="text/event-stream")
    answer["Cache-Control"] = "no-cache"
    answer["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the stream back
    return answer


async def blocked(*, kind: str, id: str, model: str, notice: str, n: int) -> AsyncIterator[str]:
    """The stream of a request whose input the content policy blocked: the notice as each
    choice's content, finish_reason content_filter."""
    created = int(time.time())
    for index in range(n):
        yield data(
            shapes.chunk(
                kind=kind, id=id, created=created, model=model, index=index, text=notice, role=True
            )
        )
        yield data(
            shapes.chunk(
                kind=kind,
                id=id,
                created=created,
                model=model,
                index=index,
                text=None if kind == shapes.CHAT else "",
                finish="content_filter",
            )
        )
    yield DONE


async def completion_events(
    follower: Follower, *, kind: str, id: str, model: str, include_usage: bool, keepalive: float
) -> AsyncIterator[str]:
    created = int(time.time())
    started: set[int] = set()
    usage_null = {"usage": None} if include_usage else {}

    def piece(index: int, text: str | None, finish: str | None = None) -> str:
        role = index not in started
        started.add(index)
        found = shapes.chunk(
            kind=kind,
            id=id,
            created=created,
            model=model,
            index=index,
            text=text,
            role=role,
            finish=finish,
        )
        return data({**found, **usage_null})

    try:
        for index in range(len(follower.generation_ids)):  # the role first, as OpenAI does
            if kind == shapes.CHAT:
                yield piece(index, "")
        async for item in follower.events(idle_seconds=keepalive):
            if item is None:
                yield comment("keep-alive")
                continue
            index, event = item
            kind_of = event.get("type")
            if kind_of == "token":
                yield piece(index, event["text"])
            elif kind_of == "queue":
                position = {k: event.get(k) for k in ("position", "workers", "eta_seconds")}
                yield comment("queue " + json.dumps({"choice": index, **position}))
            elif kind_of == "done" and event.get("status") != Status.FAILED:
                yield piece(
                    index, None if kind == shapes.CHAT else "", finish=shapes.finish_reason(event)
                )
            elif kind_of in ("done", "error"):
                message = shapes.failure([event]) or "The generation failed."
                yield data(
                    {
                        "error": {
                            "message": message,
                            "type": "server_error",
                            "param": None,
                            "code": "generation_failed",
                        }
                    }
                )
                return
            elif kind_of in ("running", "status", "worker_lost"):
                yield comment(str(event.get("status") or kind_of))
        if include_usage:
            dones = [follower.done[i] for i in range(len(follower.generation_ids))]
            yield data(
                shapes.usage_chunk(kind=kind, id=id, created=created, model=model, dones=dones)
            )
        yield DONE
    finally:
        if not follower.finished:
            await asyncio.shield(follower.stop_unfinished())
        await follower.close()
