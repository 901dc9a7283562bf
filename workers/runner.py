"""Run one Generation: claim it, screen its input, load its model, stream its tokens,
record the outcome. Each step is a function of its own (the engine that will batch many
generations calls the same steps); `Run` holds one generation's state between them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from django.db import DatabaseError

from generation.batching import BatchOutOfMemory
from generation.loading import LoadedModel
from generation.rnn.loading import LoadedRNN
from generation.safety import TextClassifier, Verdict
from generation.specs import GenerationError, ModelLoadError, Task
from webapp.catalog import services as catalog
from webapp.catalog.models import ModelEntry
from webapp.chat import titles
from webapp.inference import services, streams
from webapp.inference.events import Usage
from webapp.inference.models import INPUT_BLOCKED, Generation, Status
from webapp.moderation import config
from webapp.moderation import services as moderation
from webapp.moderation.guard import OutputGuard
from webapp.moderation.models import Direction
from workers import handlers, heartbeat, model_cache, screening
from workers.database import while_database_away

log = logging.getLogger(__name__)

# Tasks whose text output is checked by the content-safety filter as it streams.
GUARDED_TASKS = (Task.CHAT, titles.TITLE_TASK, Task.SUMMARIZE, Task.TRANSLATE)
SCREENED = screening.SCREENED_TASKS


@dataclass
class Run:
    """One generation on this worker, from claim to its recorded outcome: what the steps
    below hand on to each other. `on_text` and `should_stop` are what the task's handler
    calls, so a run owns no loop of its own."""

    generation: Generation
    writer: streams.StreamWriter
    entry: ModelEntry | None  # the task's model; gone when the catalog entry was deleted
    policy: config.NamedPolicy | None = None
    layers: list[TextClassifier] = field(default_factory=list)
    guard: OutputGuard | None = None
    stop_watch: streams.StopWatch | None = None
    first_piece: bool = True
    on_loaded: Callable[[Any], None] | None = None  # told when the model is loaded

    @classmethod
    def claimed(cls, generation: Generation) -> Run:
        """The run of a generation this worker has just claimed."""
        return cls(generation, streams.StreamWriter(generation.pk), generation.model)

    @property
    def generation_id(self) -> int:
        return self.generation.pk

    def send(self, piece: str) -> None:
        """Text that may reach the client: onto the stream (the first piece also marks the
        time to first token)."""
        if not piece:
            return
        if self.first_piece:
            self.first_piece = False
            try:
                services.mark_first_token(self.generation_id)
            except DatabaseError as exc:  # a timing only: the reply streams on regardless
                log.warning("generation %s: no first token time: %s", self.generation_id, exc)
        self.writer.add(piece)

    def on_text(self, piece: str) -> None:
        """A piece from the model: through the output guard, if any, then sent."""
        self.send(self.guard.feed(piece) if self.guard is not None else piece)

    def should_stop(self) -> bool:
        """Between two decoding steps: the guard blocked the reply, or a stop was asked."""
        blocked = self.guard is not None and self.guard.blocked is not None
        return blocked or (self.stop_watch is not None and self.stop_watch())


def run_next(queue: str) -> int | None:
    """Run the next generation of the queue, in fair order, in this thread. Returns its
    id (None when nothing was queued: a wake-up message can outnumber the generations).
    A worker's scheduler (workers.scheduler) runs many at once instead."""
    run = claim(queue)
    if run is None:
        log.info("queue %s: nothing to run", queue)
        return None
    heartbeat.running.add(run.generation_id)
    try:
        run_claimed(run)
    finally:
        heartbeat.running.discard(run.generation_id)
    return run.generation_id


def run_claimed(run: Run) -> None:
    """A claimed generation's steps, in the calling thread, its outcome always recorded."""
    try:
        steps(run)
    except Exception as exc:
        # Whatever broke (the database refusing a write, Redis, a bug), the generation must
        # not stay "running": end it as failed, keeping any partial text.
        log.exception("generation %s failed", run.generation_id)
        fail(run, f"generation failed: {type(exc).__name__}: {exc}", partial=run.writer.text)


def steps(run: Run) -> None:
    """A claimed generation's steps in order; each one that ends the run early has recorded
    its outcome and returns False (or None)."""
    if not start(run) or not model_available(run) or not screen(run):
        return
    loaded = load(run)
    if loaded is None:
        return
    outcome = generate(run, loaded)
    if outcome is not None:
        record(run, outcome)


def claim(queue: str) -> Run | None:
    """The next queued generation of the queue, in fair order, now held by this worker."""
    generation = services.claim_next(queue, worker=heartbeat.WORKER_NAME)
    if generation is None:
        return None
    return Run.claimed(generation)


def start(run: Run) -> bool:
    """Resume the stream (a generation run again after its worker died appends to it) and
    say it runs, unless a stop was asked before it started: then it ends stopped."""
    run.writer.resume()
    if streams.stop_requested(run.generation_id):
        services.finish(
            run.generation_id,
            status=Status.STOPPED,
            finish_reason="stopped",
            worker=heartbeat.WORKER_NAME,
        )
        run.writer.done(Status.STOPPED, finish_reason="stopped")
        return False
    run.writer.status(Status.RUNNING)
    return True


def model_available(run: Run) -> bool:
    """The task's model is still in the catalog and enabled; the run fails otherwise."""
    if run.entry is None or not run.entry.enabled:
        fail(run, f"model {run.generation.model_name!r} is no longer available")
        return False
    return True


def screen(run: Run) -> bool:
    """The user's policy; its moderation models (if it names any), loaded, check the input
    before the task's model sees it (they check the output too, with the rules, as it
    streams). False when the run ended: a model unusable, or the input blocked."""
    task = run.generation.task
    if task not in GUARDED_TASKS and task not in SCREENED:
        return True
    run.policy = config.policy_for(run.generation.user)
    try:
        run.layers = screening.model_layers(run.policy.policy.model_classifiers)
    except screening.ScreeningUnavailable as exc:
        log.error("generation %s: %s", run.generation_id, exc)
        fail(run, str(exc))
        return False
    if not run.layers:
        return True
    verdict = screening.screen_input(run.generation, run.policy, run.layers)
    if verdict is not None and verdict.blocked:
        blocked_input(run, verdict)
        return False
    return True


def load(run: Run) -> LoadedModel | LoadedRNN | None:
    """The task's model from this process's cache, the loading (or its error) recorded on
    the catalog entry; None when it failed to load (the run has failed)."""
    entry = run.entry
    if entry is None:  # model_available() came first; this is for the type checker
        raise RuntimeError(f"generation {run.generation_id} has no model")
    try:
        loaded = model_cache.get_model(entry)
    except ModelLoadError as exc:
        log.error("generation %s: %s", run.generation_id, exc)
        catalog.record_load_error(entry.pk, str(exc))
        fail(run, str(exc))
        return None
    if entry.last_error or entry.last_loaded_at is None:
        catalog.record_loaded(entry.pk)
    if run.on_loaded is not None:
        run.on_loaded(loaded)
    return loaded


def generate(run: Run, loaded: LoadedModel | LoadedRNN) -> handlers.Outcome | None:
    """The task's handler on the model, its text streamed through the output guard (only
    what the guard releases reaches the stream; a block stops generation at the next
    step). None when the request failed (recorded)."""
    if run.generation.task in GUARDED_TASKS:
        run.guard = OutputGuard.for_generation(run.generation, run.policy, run.layers)
    run.stop_watch = streams.StopWatch(run.generation_id)
    try:
        handle = handlers.handler_for(run.generation.task)
        outcome = handle(run.generation, loaded, run.on_text, run.should_stop)
        if run.guard is not None and run.guard.blocked is None:
            run.send(run.guard.finish())  # the held-back tail, once checked
    except (GenerationError, ValueError) as exc:  # the request cannot run on this model
        fail(run, str(exc), partial=run.writer.text)
        return None
    except (torch.OutOfMemoryError, MemoryError) as exc:
        out_of_memory(run, beside_others=isinstance(exc, BatchOutOfMemory))
        return None
    finally:
        run.stop_watch.close()
    return outcome


def record(run: Run, outcome: handlers.Outcome) -> None:
    """Store the outcome (only if this worker still holds the generation: one taken for
    dead and requeued meanwhile belongs to its new run), the guard's verdict, then the done
    event carrying the stored text; then the follow-ups."""
    stats = outcome.stats
    output = run.writer.text if outcome.output is None else outcome.output
    finish_reason = stats.finish_reason
    status = Status.STOPPED if finish_reason == "stopped" else Status.DONE
    guard = run.guard
    if guard is not None and guard.blocked is not None:
        # The withheld text never reached the stream; the reply becomes the notice.
        status, output, finish_reason = Status.BLOCKED, guard.notice, "blocked"
    run.writer.flush()
    recorded = while_database_away(
        lambda: services.finish(
            run.generation_id,
            status=status,
            output=output,
            result=outcome.result,
            finish_reason=finish_reason,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            images=outcome.images,
            worker=heartbeat.WORKER_NAME,
        ),
        f"generation {run.generation_id}: recording its outcome",
    )
    if not recorded:  # taken for dead and requeued meanwhile: the new run owns the stream
        log.warning("generation %s: finished after it was requeued; dropped", run.generation_id)
        return
    if guard is not None:
        guard.record(run.generation_id)
    run.writer.done(
        status,
        finish_reason=finish_reason,
        usage=Usage(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens),
        result=outcome.result,
        text=output,
    )
    follow_up(run.generation_id)


def blocked_input(run: Run, verdict: Verdict) -> None:
    """A moderation model blocked the input: the task's model never ran; the reply is the
    notice, as for an input the web process blocked."""
    notice = moderation.notice_for(verdict, direction=Direction.INPUT)
    recorded = services.finish(
        run.generation_id,
        status=Status.BLOCKED,
        output=notice,
        finish_reason=INPUT_BLOCKED,
        worker=heartbeat.WORKER_NAME,
    )
    if recorded:
        run.writer.done(Status.BLOCKED, finish_reason=INPUT_BLOCKED, text=notice)


def out_of_memory(run: Run, beside_others: bool = False) -> None:
    """This request fails with a message that names the model. Alone on this worker, it
    frees the models held, so the next request (maybe for a smaller model) can run; one
    that did not fit beside others in a batch (the newest row) leaves them running."""
    log.exception("generation %s: out of memory", run.generation_id)
    if not beside_others and heartbeat.running <= {run.generation_id}:
        model_cache.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    name = run.entry.name if run.entry is not None else run.generation.model_name
    message = (
        f"model {name!r} ran out of memory on this request; try a shorter input "
        "or fewer new tokens, or ask an admin to choose a smaller quantization"
    )
    fail(run, message, partial=run.writer.text)


def follow_up(generation_id: int) -> None:
    """Follow-up work of a finished generation: a conversation's first reply asks for a
    title (a background request); a title request gives its conversation the title."""
    try:
        generation = Generation.objects.select_related("model").get(pk=generation_id)
        if generation.task == Task.CHAT:
            titles.request_title(generation)
        elif generation.task == titles.TITLE_TASK:
            titles.apply_title(generation)
    except Exception:  # a title is a nicety; never fail the reply for it
        log.exception("generation %s: follow-up failed", generation_id)


def fail(run: Run, message: str, partial: str = "") -> None:
    """End the generation as failed with the message, keeping what was streamed."""
    worker = heartbeat.WORKER_NAME
    stored = partial
    what = f"generation {run.generation_id}: recording its failure"
    try:
        recorded = while_database_away(
            lambda: services.finish(
                run.generation_id,
                status=Status.FAILED,
                error=message,
                output=partial,
                finish_reason="error",
                worker=worker,
            ),
            what,
        )
    except Exception:  # e.g. the partial text itself was refused: keep the verdict at least
        log.exception("generation %s: could not store the partial text", run.generation_id)
        stored = ""
        recorded = while_database_away(
            lambda: services.finish(
                run.generation_id,
                status=Status.FAILED,
                error=message,
                finish_reason="error",
                worker=worker,
            ),
            what,
        )
    if not recorded:
        return
    run.writer.done(Status.FAILED, finish_reason="error", error=message, text=stored)
