"""How a worker runs many generations at once: it claims queued generations while it has
room for them, in fair order, and runs each on a thread of its own through the runner's
steps; the model's `Batcher` (generation.batching) decodes those of one model together.

Room is counted per model: a model whose requests batch has `max_batch` slots (the
catalog entry's, or the device's default), any other model one. A model not loaded yet
has one slot until its first generation has loaded it (the others would wait for the
load anyway); then the scheduler looks again. Background work (titles, batch-job items)
may fill a model's slots but the last quarter of them (at least one, when there are two
or more), which are kept for interactive requests: a person never waits behind a full
batch of background items for more than one generation's worth of slots, without
preempting (and wasting) a background row already decoding.

The scheduler is woken by the Celery wake-up message (`workers.tasks.run_next`), by a
generation that ends or loads its model, and every ATELIER_WORKER_POLL_SECONDS anyway, so
a worker with room finds work whose wake-up message another, full worker consumed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connections

from webapp.catalog.models import ModelEntry
from webapp.inference import services
from webapp.inference.models import Priority
from workers import heartbeat, model_cache, runner

log = logging.getLogger(__name__)


@dataclass
class _Running:
    model_id: int | None
    background: bool
    thread: threading.Thread


def slots_for(entry: ModelEntry | None) -> int:
    """How many generations of the entry's model this worker runs at once now."""
    if entry is None:
        return 1
    loaded = model_cache.peek(entry)
    if loaded is None:
        return 1
    batcher = loaded.batcher
    if batcher is None:
        return 1
    return max(1, int(batcher.max_batch))


def interactive_reserve(slots: int) -> int:
    """Slots of a model kept for interactive requests (background work takes the rest)."""
    return 0 if slots < 2 else max(1, slots // 4)


class Scheduler:
    def __init__(
        self, queues: list[str], name: str = heartbeat.WORKER_NAME, max_runs: int | None = None
    ) -> None:
        self.queues = queues
        self.name = name
        self.max_runs = max_runs or settings.ATELIER_WORKER_MAX_RUNS
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._entries: dict[int, ModelEntry] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="atelier-scheduler", daemon=True)

    # -- control ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Claim nothing more; wait up to `timeout` for the running generations to end.
        Returns those still running (the caller may requeue them)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            threads = [run.thread for run in self._running.values()]
        for thread in threads:
            thread.join(timeout=timeout)
        with self._lock:
            return sorted(self._running)

    @property
    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._running)

    # -- claiming ---------------------------------------------------------------------

    def _loop(self) -> None:
        poll = settings.ATELIER_WORKER_POLL_SECONDS
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    close_old_connections()
                    self.claim_all()
                except Exception as exc:  # the database or Redis away: try again soon
                    log.warning("scheduler: %s: %s", type(exc).__name__, exc)
                self._wake.wait(poll)
        finally:
            connections.close_all()

    def claim_all(self) -> int:
        """Claim and start generations while there is room; returns how many started."""
        started = 0
        for queue in self.queues:
            while not self._stop.is_set():
                run = self._claim(queue)
                if run is None:
                    break
                self._start(run)
                started += 1
        return started

    def _claim(self, queue: str) -> runner.Run | None:
        with self._lock:
            if len(self._running) >= self.max_runs:
                return None
            full, background_full = self._full_models()
        generation = services.claim_next(
            queue, worker=self.name, skip_models=full, skip_background=background_full
        )
        if generation is None:
            return None
        return runner.Run.claimed(generation)

    def _full_models(self) -> tuple[set[int | None], set[int | None]]:
        """Models with no slot left, and models whose slots left are kept for people."""
        counts: dict[int | None, list[int]] = {}
        for run in self._running.values():
            total, background = counts.setdefault(run.model_id, [0, 0])
            counts[run.model_id] = [total + 1, background + run.background]
        full, background_full = set(), set()
        for model_id, (total, background) in counts.items():
            slots = slots_for(self._entries.get(model_id) if model_id is not None else None)
            if total >= slots:
                full.add(model_id)
            elif background >= slots - interactive_reserve(slots):
                background_full.add(model_id)
        return full, background_full

    def _start(self, run: runner.Run) -> None:
        generation = run.generation
        thread = threading.Thread(
            target=self._run, args=(run,), name=f"generation-{generation.pk}", daemon=True
        )
        with self._lock:
            if run.entry is not None and generation.model_id is not None:
                self._entries[generation.model_id] = run.entry
            self._running[generation.pk] = _Running(
                generation.model_id, generation.priority != Priority.INTERACTIVE, thread
            )
            heartbeat.running.add(generation.pk)
        run.on_loaded = self._loaded
        thread.start()

    def _loaded(self, loaded: object) -> None:
        batcher = getattr(loaded, "batcher", None)
        if batcher is not None:
            heartbeat.slots = max(heartbeat.slots, batcher.max_batch)
        self.wake()  # the model's slots may have grown from one to its batch

    def _run(self, run: runner.Run) -> None:
        try:
            runner.run_claimed(run)
        finally:
            with self._lock:
                self._running.pop(run.generation_id, None)
                heartbeat.running.discard(run.generation_id)
            connections.close_all()  # this thread's own connection
            self.wake()


_scheduler: Scheduler | None = None


def current() -> Scheduler | None:
    """This process's scheduler, when it is a worker that started one."""
    return _scheduler


def start(queues: list[str]) -> Scheduler:
    global _scheduler
    _scheduler = Scheduler(queues)
    _scheduler.start()
    return _scheduler


def stop(timeout: float = 10.0) -> None:
    """Let running generations end (up to `timeout`), then requeue those that did not,
    so none stays "running" for a worker that is gone."""
    global _scheduler
    if _scheduler is None:
        return
    left = _scheduler.stop(timeout)
    for generation_id in left:
        try:
            services.recover_orphan(generation_id, _scheduler.name)
        except Exception:
            log.exception("generation %s: could not requeue it at shutdown", generation_id)
    _scheduler = None
