"""One-shot actions: summarize a text, translate it, label an image; and the user's
results (list, one, delete). Each request goes through the front door
(`inference.front_door.submit`: account, suspension, per-user limit, model, content policy
on text input) after the checks of its own form; a refused one stores nothing but the
moderation verdict, and raises a `refusals.Refused` whose message the page shows."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from generation.languages import LANGUAGES, language_name
from generation.specs import SummaryLength, Task
from webapp.accounts.models import User
from webapp.inference import front_door, uploads
from webapp.inference import services as inference
from webapp.inference.models import Status
from webapp.inference.refusals import InputBlocked, InvalidInput
from webapp.studio import languages
from webapp.studio.models import Kind, Result

TOP_K = 5
TITLE_CHARS = 80


def max_text_chars() -> int:
    return int(settings.ATELIER_STUDIO_MAX_TEXT_CHARS)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line[:TITLE_CHARS] + ("…" if len(line) > TITLE_CHARS else "")


def _check_text(text: str) -> None:
    if not text.strip():
        raise InvalidInput("There is no text: paste some or upload a file.")
    if len(text) > max_text_chars():
        raise InvalidInput(
            f"The text has {len(text):,} characters, more than the limit of {max_text_chars():,}."
        )


def _queue(user: User, kind: Kind, title: str, file_name: str = "", **request: Any) -> Result:
    """The request through the front door and its Result, in one transaction. A blocked
    input leaves the transaction normally (its verdict is kept for review) before
    InputBlocked is raised again."""
    with transaction.atomic():
        try:
            generation = front_door.submit(user, **request)
        except InputBlocked as exc:
            blocked = exc
        else:
            return Result.objects.create(
                user=user, generation=generation, kind=kind, title=title, file_name=file_name
            )
    raise blocked


def summarize(
    user: User, *, text: str, length: str, model_id: int | None, file_name: str = ""
) -> Result:
    front_door.check_can_generate(user)  # an account that may not generate hears that first
    if length not in set(SummaryLength):
        raise InvalidInput(f"Choose a length: {', '.join(SummaryLength)}.")
    _check_text(text)
    return _queue(
        user,
        Kind.SUMMARIZE,
        _title(file_name or text),
        file_name,
        model=model_id,
        task=Task.SUMMARIZE,
        input={"text": text, "length": length},
        screened=[front_door.Screened(text, Task.SUMMARIZE)],
    )


def translate(user: User, *, text: str, target: str, source: str, model_id: int | None) -> Result:
    """Translate into `target`; `source` empty means detect it (in the worker)."""
    front_door.check_can_generate(user)
    if target not in LANGUAGES:
        raise InvalidInput("Choose the language to translate into.")
    if source and source not in LANGUAGES:
        raise InvalidInput(f"Unknown source language {source!r}.")
    if source == target:
        raise InvalidInput(
            f"The source and target languages are both {language_name(target)}; "
            "choose another target."
        )
    model = front_door.model_for(user, Task.TRANSLATE, model_id)
    support = languages.support_for(model)
    if support is not None:
        wrong_target = target not in support.targets
        if wrong_target or (source and not support.allows(source, target)):
            pair = f"{language_name(source)} to " if source else ""
            raise InvalidInput(
                f"{model.name} cannot translate {pair}{language_name(target)}; it translates "
                f"{support.describe()}."
            )
    _check_text(text)
    task_input = {"text": text, "target": target}
    if source:
        task_input["source"] = source
    return _queue(
        user,
        Kind.TRANSLATE,
        f"→ {language_name(target)}: {_title(text)}"[:200],
        model=model,
        task=Task.TRANSLATE,
        input=task_input,
        screened=[front_door.Screened(text, Task.TRANSLATE)],
    )


def classify(user: User, *, image: bytes, file_name: str, model_id: int | None) -> Result:
    """Store the image (checked by content) and queue its top labels."""
    front_door.check_can_generate(user)
    model = front_door.model_for(user, Task.CLASSIFY_IMAGE, model_id)
    try:
        path = uploads.save_image(user.pk, image)
    except uploads.UploadError as exc:
        raise InvalidInput(f"“{file_name}”: {exc}.") from None
    try:
        return _queue(
            user,
            Kind.CLASSIFY_IMAGE,
            file_name[:200] or "Image",
            file_name[:255],
            model=model,
            task=Task.CLASSIFY_IMAGE,
            input={"image": path, "top_k": TOP_K},
        )
    except Exception:
        uploads.delete(path)  # nothing refers to it
        raise


def results_for(user: User) -> QuerySet[Result]:
    return Result.objects.filter(user=user).select_related("generation")


def result_for(user: User, generation_id: int) -> Result | None:
    """The user's result of that generation; None for anyone else's (or none)."""
    return results_for(user).filter(generation_id=generation_id).first()


def image_path(result: Result) -> str:
    if result.kind != Kind.CLASSIFY_IMAGE:
        return ""
    path = result.generation.input.get("image")
    return path if isinstance(path, str) else ""


def delete_result(result: Result) -> None:
    """Delete the result, its generation (stopping it if it runs; its stream goes) and
    its uploaded image."""
    image = image_path(result)
    inference.delete_generations([result.generation_id])  # the result goes with it
    if image:
        uploads.delete(image)


def doubtful_translation(result: Result) -> str:
    """Why a finished translation looks untranslated ("" when it does not): its output is
    its input, or the text was detected in the language asked for."""
    generation = result.generation
    if result.kind != Kind.TRANSLATE or generation.status != Status.DONE:
        return ""
    task_input = generation.input if isinstance(generation.input, dict) else {}
    outcome = generation.result if isinstance(generation.result, dict) else {}
    target = str(outcome.get("target") or task_input.get("target") or "")
    if outcome.get("source") and outcome.get("source") == target:
        return same_language_notice(target)
    if _plain(generation.output) == _plain(str(task_input.get("text", ""))):
        return unchanged_notice(target)
    return ""


def unchanged_notice(target: str) -> str:
    name = language_name(target) if target else "the language asked for"
    return (
        f"Doubtful: the output is the input, unchanged. The model may not translate into "
        f"{name}; try another translation model."
    )


def same_language_notice(target: str) -> str:
    name = language_name(target) if target else "the language asked for"
    return f"Doubtful: the text seems to be in {name} already, so there was nothing to translate."


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()
