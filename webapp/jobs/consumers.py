"""A job's live progress over a WebSocket: `progress` events (counts, throughput, time
left) and `items` events (items whose status changed), until the job has ended.

The server pushes; the client sends nothing. The state lives in the database (workers
write it), so the consumer reads it about once a second and sends only what changed; every
few seconds it also runs the engine's reconcile pass, which tops the job up if a
finished-generation signal was lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone

from webapp.accounts.models import User
from webapp.inference.consumers import CLOSE_NOT_FOUND, signed_in_user
from webapp.jobs import engine, services
from webapp.jobs.models import JobItem, JobStatus
from webapp.operations import metrics

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RECONCILE_EVERY = 3  # polls
MAX_ITEMS_PER_EVENT = 500
ENDED = (JobStatus.DONE, JobStatus.CANCELLED)


class JobProgressConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        job = await database_sync_to_async(services.job_for)(user, job_id)
        if job is None:  # someone else's job looks like no job at all
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user: User = user
        self.job_id = job.pk
        await self.accept()
        metrics.websocket_opened(self, "job")
        self.task = asyncio.create_task(self.watch())

    async def disconnect(self, code: int) -> None:
        metrics.websocket_closed(self)
        task = getattr(self, "task", None)
        if task is not None:
            task.cancel()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        # Not receive_json: any frame (not JSON, a nesting bomb, binary) gets this answer
        # instead of an exception from decoding it.
        await self.send_json(
            {"type": "error", "code": "bad_request", "message": "This socket only sends."}
        )

    async def watch(self) -> None:
        last: dict[str, Any] | None = None
        sent: dict[int, datetime] = {}
        polls = 0
        try:
            while True:
                if polls % RECONCILE_EVERY == 0:
                    await database_sync_to_async(engine.reconcile)(self.job_id)
                polls += 1
                progress = (await database_sync_to_async(engine.progress)(self.job_id)).as_event()
                items = await database_sync_to_async(_changed_items)(self.job_id, sent)
                if items:
                    await self.send_json({"type": "items", "items": items})
                if progress != last:
                    await self.send_json(progress)
                    last = progress
                if progress["status"] in ENDED and not progress["running"]:
                    await self.close()  # nothing more will change
                    return
                await asyncio.sleep(POLL_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("progress of job %s failed", self.job_id)
            await self.send_json(
                {
                    "type": "error",
                    "code": "server_error",
                    "message": "Live progress stopped; reload the page.",
                }
            )


OVERLAP = timedelta(seconds=5)  # a change committed late, stamped before the last look


def _changed_items(job_id: int, sent: dict[int, datetime]) -> list[dict[str, object]]:
    """Items changed since the last look (none on the first: the page shows them).
    `sent` maps each item's index to the change last sent, and is updated; looking back
    a few seconds catches a change that was stamped earlier than it was committed."""
    rows = JobItem.objects.filter(job_id=job_id)
    if not sent:
        latest = rows.order_by("-updated_at").values_list("updated_at", flat=True).first()
        sent[-1] = latest or timezone.now()
        return []
    since = max(sent.values()) - OVERLAP
    changed = [
        item
        for item in rows.filter(updated_at__gt=since).order_by("updated_at")[:MAX_ITEMS_PER_EVENT]
        if sent.get(item.index) != item.updated_at
    ]
    for item in changed:
        sent[item.index] = item.updated_at
    return item_rows(changed)


def item_rows(items: list[JobItem]) -> list[dict[str, object]]:
    """Items as the page's table shows them."""
    return [
        {"index": i.index, "status": i.status, "error": i.error, "output": i.output[:400]}
        for i in items
    ]
