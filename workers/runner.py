"""Run one Generation: claim it, load its model, stream its tokens, record the outcome."""

from __future__ import annotations

import logging

import torch

from generation.safety import Verdict
from generation.specs import GenerationError, ModelLoadError, Task
from webapp.catalog import services as catalog
from webapp.chat import titles
from webapp.inference import services, streams
from webapp.inference.events import Usage
from webapp.inference.models import Generation, Status
from webapp.moderation import config
from webapp.moderation import services as moderation
from webapp.moderation.guard import OutputGuard
from webapp.moderation.models import Direction
from workers import handlers, heartbeat, model_cache, screening

log = logging.getLogger(__name__)

# Tasks whose text output is checked by the content-safety filter as it streams.
GUARDED_TASKS = (Task.CHAT, titles.TITLE_TASK, Task.SUMMARIZE, Task.TRANSLATE)
SCREENED = screening.SCREENED_TASKS
# The finish reason of a generation whose input a moderation model blocked.
INPUT_BLOCKED = "input_blocked"


def run_next(queue: str) -> int | None:
    """Run the next generation of the queue, in fair order. Returns its id (None when
    nothing was queued: a wake-up message can outnumber the generations)."""
    generation = services.claim_next(queue, worker=heartbeat.WORKER_NAME)
    if generation is None:
        log.info("queue %s: nothing to run", queue)
        return None
    generation_id = generation.pk
    writer = streams.StreamWriter(generation_id)
    heartbeat.current_generation = generation_id
    try:
        _run(generation, writer)
    except Exception as exc:
        # Whatever broke (the database refusing a write, Redis, a bug), the generation must
        # not stay "running": end it as failed, keeping any partial text.
        log.exception("generation %s failed", generation_id)
        message = f"generation failed: {type(exc).__name__}: {exc}"
        _fail(writer, generation_id, message, partial=writer.text)
    finally:
        heartbeat.current_generation = None
    return generation_id


def _run(generation: Generation, writer: streams.StreamWriter) -> None:
    generation_id = generation.pk
    writer.resume()  # a generation run again after its worker died appends to its stream
    if streams.stop_requested(generation_id):
        services.finish(
            generation_id,
            status=Status.STOPPED,
            finish_reason="stopped",
            worker=heartbeat.WORKER_NAME,
        )
        writer.done(Status.STOPPED, finish_reason="stopped")
        return
    writer.status(Status.RUNNING)
    entry = generation.model
    if entry is None or not entry.enabled:
        _fail(writer, generation_id, f"model {generation.model_name!r} is no longer available")
        return

    # The policy's moderation models (if it names any) check the input before the task's
    # model sees it, and the output with the rules as it streams.
    guarded = generation.task in GUARDED_TASKS
    named = config.policy_for(generation.user) if guarded or generation.task in SCREENED else None
    try:
        layers = screening.model_layers(named.policy.model_classifiers) if named else []
    except screening.ScreeningUnavailable as exc:
        log.error("generation %s: %s", generation_id, exc)
        _fail(writer, generation_id, str(exc))
        return
    if named is not None and layers:
        verdict = screening.screen_input(generation, named, layers)
        if verdict is not None and verdict.blocked:
            _blocked_input(writer, generation_id, verdict)
            return
    try:
        loaded = model_cache.get_model(entry)
    except ModelLoadError as exc:
        log.error("generation %s: %s", generation_id, exc)
        catalog.record_load_error(entry.pk, str(exc))
        _fail(writer, generation_id, str(exc))
        return
    if entry.last_error or entry.last_loaded_at is None:
        catalog.record_loaded(entry.pk)

    # Text output is checked as it grows: only what the guard releases reaches the stream,
    # and a block stops generation at the next step.
    guard = OutputGuard.for_generation(generation, named, layers) if guarded else None
    first_piece = True

    def send(piece: str) -> None:
        nonlocal first_piece
        if not piece:
            return
        if first_piece:
            services.mark_first_token(generation_id)
            first_piece = False
        writer.add(piece)

    def on_text(piece: str) -> None:
        send(guard.feed(piece) if guard is not None else piece)

    stop_watch = streams.StopWatch(generation_id)

    def should_stop() -> bool:
        return (guard is not None and guard.blocked is not None) or stop_watch()

    try:
        handle = handlers.handler_for(generation.task)
        outcome = handle(generation, loaded, on_text, should_stop)
        if guard is not None and guard.blocked is None:
            send(guard.finish())  # the held-back tail, once checked
    except (GenerationError, ValueError) as exc:  # the request cannot run on this model
        _fail(writer, generation_id, str(exc), partial=writer.text)
        return
    except (torch.OutOfMemoryError, MemoryError):
        # Free what this worker holds so the next request (maybe for a smaller model) can
        # run; this one fails with a message that names the model.
        log.exception("generation %s: out of memory", generation_id)
        model_cache.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        message = (
            f"model {entry.name!r} ran out of memory on this request; try a shorter input "
            "or fewer new tokens, or ask an admin to choose a smaller quantization"
        )
        _fail(writer, generation_id, message, partial=writer.text)
        return
    finally:
        stop_watch.close()

    stats = outcome.stats
    output = writer.text if outcome.output is None else outcome.output
    finish_reason = stats.finish_reason
    status = Status.STOPPED if finish_reason == "stopped" else Status.DONE
    if guard is not None and guard.blocked is not None:
        # The withheld text never reached the stream; the reply becomes the notice.
        status, output, finish_reason = Status.BLOCKED, guard.notice, "blocked"
    writer.flush()
    recorded = services.finish(
        generation_id,
        status=status,
        output=output,
        result=outcome.result,
        finish_reason=finish_reason,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        worker=heartbeat.WORKER_NAME,
    )
    if not recorded:  # taken for dead and requeued meanwhile: the new run owns the stream
        log.warning("generation %s: finished after it was requeued; dropped", generation_id)
        return
    if guard is not None:
        guard.record(generation_id)
    writer.done(
        status,
        finish_reason=finish_reason,
        usage=Usage(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens),
        result=outcome.result,
        text=output,
    )
    _after(generation_id)


def _blocked_input(writer: streams.StreamWriter, generation_id: int, verdict: Verdict) -> None:
    """A moderation model blocked the input: the task's model never ran; the reply is the
    notice, as for an input the web process blocked."""
    notice = moderation.notice_for(verdict, direction=Direction.INPUT)
    recorded = services.finish(
        generation_id,
        status=Status.BLOCKED,
        output=notice,
        finish_reason=INPUT_BLOCKED,
        worker=heartbeat.WORKER_NAME,
    )
    if recorded:
        writer.done(Status.BLOCKED, finish_reason=INPUT_BLOCKED, text=notice)


def _after(generation_id: int) -> None:
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


def _fail(
    writer: streams.StreamWriter, generation_id: int, message: str, partial: str = ""
) -> None:
    worker = heartbeat.WORKER_NAME
    stored = partial
    try:
        recorded = services.finish(
            generation_id,
            status=Status.FAILED,
            error=message,
            output=partial,
            finish_reason="error",
            worker=worker,
        )
    except Exception:  # e.g. the partial text itself was refused: keep the verdict at least
        log.exception("generation %s: could not store the partial text", generation_id)
        stored = ""
        recorded = services.finish(
            generation_id, status=Status.FAILED, error=message, finish_reason="error", worker=worker
        )
    if not recorded:
        return
    writer.done(Status.FAILED, finish_reason="error", error=message, text=stored)
