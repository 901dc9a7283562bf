"""The worker's heartbeat thread: says this worker is alive and what it runs, and looks
after generations that lost their worker and queued ones whose wake-up message was lost.

A worker killed with SIGKILL stops beating; its heartbeat key expires after
ATELIER_WORKER_TIMEOUT_SECONDS, and any other live worker (or this one restarted) then
requeues the generation it was running (or fails it after ATELIER_GENERATION_MAX_ATTEMPTS).
The run command requeues them at once when it sees the process die, and a worker that
starts under its predecessor's name (same host and pid) does so before it claims anything.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections

from webapp.inference import liveness, services
from webapp.jobs import engine
from webapp.operations import worker_status
from workers import model_cache

log = logging.getLogger(__name__)

WORKER_NAME = liveness.process_name()
running: set[int] = set()  # the generations this process runs now (runner and scheduler)
slots = 1  # how many it runs at once: its widest batch (the scheduler raises it)


class Heartbeat:
    def __init__(self, queues: list[str], name: str = WORKER_NAME) -> None:
        self.queues = queues
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="atelier-heartbeat", daemon=True)
        # generation -> when it was first seen running without a live worker. Acting only
        # after it stayed so for a while spares workers whose key a Redis restart wiped
        # (they write it again within one beat).
        self._suspects: dict[int, float] = {}

    def start(self) -> None:
        self.requeue_predecessors_work()
        self._thread.start()

    def requeue_predecessors_work(self) -> None:
        """Before this process claims anything: generations running under its own name
        belong to a predecessor that died with the same host and pid (a restarted
        container numbers its processes alike), whose name now looks alive again."""
        try:
            for generation_id, worker in services.running_without_worker(set()):
                if worker == self.name:
                    services.recover_orphan(generation_id, worker)
        except Exception as exc:  # the database away: nothing is claimed until it is back
            log.warning("could not look for a predecessor's work: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            liveness.forget(self.name)
        except Exception:
            log.warning("could not remove the heartbeat of %s", self.name)

    def _loop(self) -> None:
        interval = settings.ATELIER_WORKER_HEARTBEAT_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    liveness.beat(self.name, self.queues, set(running), slots)
                    worker_status.publish(self.name, model_cache.held())
                    close_old_connections()
                    self.look_after_queues()
                except Exception as exc:  # Redis or the database away: try again next beat
                    log.warning("heartbeat: %s: %s", type(exc).__name__, exc)
                self._stop.wait(interval)
        finally:
            # The thread's own connection: a command that beats for a while (batch_summarize)
            # goes on after it, and a test database must not be left in use.
            connections.close_all()

    def look_after_queues(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        live = {worker.name for worker in liveness.live_workers()}
        orphans = dict(services.running_without_worker(live))
        self._suspects = {g: self._suspects.get(g, now) for g in orphans}
        grace = 2 * settings.ATELIER_WORKER_HEARTBEAT_SECONDS
        for generation_id, since in list(self._suspects.items()):
            if now - since >= grace:
                services.recover_orphan(generation_id, orphans[generation_id])
                del self._suspects[generation_id]
        stalled = engine.reconcile_stalled()
        if stalled:
            log.info("reconciled %d batch job(s) whose item outcome was not recorded", stalled)
        for queue in self.queues:
            sent = services.top_up(queue)
            if sent:
                log.info("queue %s: sent %d wake-up message(s) for queued work", queue, sent)
