"""One-shot actions: summarize a text, translate it, label an image; and the user's
results (list, one, delete). Each request is checked (account, suspension, per-user limit,
content policy on text input) before a Generation is queued; a refused one stores nothing
but the moderation verdict."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from generation.specs import Task
from generation.translate import LANGUAGES, language_name
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import ModelNotAvailable, usable_model
from webapp.chat import services as chat
from webapp.inference import services as inference
from webapp.inference import uploads
from webapp.moderation import services as moderation
from webapp.studio import languages
from webapp.studio.models import Kind, Result

LENGTHS = ("short", "medium", "long")
TOP_K = 5
TITLE_CHARS = 80


class Refused(Exception):
    """The request cannot be queued; the message says why and can be shown as it is."""


class InputBlocked(Refused):
    """The content policy blocked the text: nothing was queued (the verdict is kept for
    review)."""

    def __init__(self, category: str) -> None:
        self.category = category or "content"
        super().__init__(
            f"Your text was blocked by the content policy ({self.category}) and was not "
            "sent to the model. It is kept for review by an administrator."
        )


def max_text_chars() -> int:
    return int(settings.ATELIER_STUDIO_MAX_TEXT_CHARS)


def check_can_generate(user: User) -> None:
    """Chat's checks (pending or disabled accounts, suspended ones, users at their limit),
    each refusal given as Refused with its message."""
    try:
        chat.check_can_generate(user)
    except (chat.NotAllowed, inference.LimitReached) as exc:
        raise Refused(str(exc)) from None


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line[:TITLE_CHARS] + ("…" if len(line) > TITLE_CHARS else "")


def _check_text(user: User, text: str, task: str) -> moderation.Checked:
    if not text.strip():
        raise Refused("There is no text: paste some or upload a file.")
    if len(text) > max_text_chars():
        raise Refused(
            f"The text has {len(text):,} characters, more than the limit of {max_text_chars():,}."
        )
    checked = moderation.check_input(user, text, task=task)
    if checked.blocked:
        raise InputBlocked(checked.verdict.category or "")
    return checked


def _model(user: User, task: str, model_id: int | None) -> ModelEntry:
    try:
        return usable_model(user, task, model_id)
    except ModelNotAvailable as exc:  # its message is for the user
        raise Refused(str(exc)) from None


def summarize(
    user: User, *, text: str, length: str, model_id: int | None, file_name: str = ""
) -> Result:
    check_can_generate(user)
    if length not in LENGTHS:
        raise Refused(f"Choose a length: {', '.join(LENGTHS)}.")
    model = _model(user, Task.SUMMARIZE, model_id)
    checked = _check_text(user, text, Task.SUMMARIZE)
    with transaction.atomic():
        generation = inference.create_generation(
            user=user,
            model=model,
            task=Task.SUMMARIZE,
            input={"text": text, "length": length},
            params={},
        )
        result = Result.objects.create(
            user=user,
            generation=generation,
            kind=Kind.SUMMARIZE,
            title=_title(file_name or text),
            file_name=file_name,
        )
        moderation.link(checked, generation_id=generation.pk)
    return result


def translate(user: User, *, text: str, target: str, source: str, model_id: int | None) -> Result:
    """Translate into `target`; `source` empty means detect it (in the worker)."""
    check_can_generate(user)
    if target not in LANGUAGES:
        raise Refused("Choose the language to translate into.")
    if source and source not in LANGUAGES:
        raise Refused(f"Unknown source language {source!r}.")
    if source == target:
        raise Refused(
            f"The source and target languages are both {language_name(target)}; "
            "choose another target."
        )
    model = _model(user, Task.TRANSLATE, model_id)
    support = languages.support_for(model)
    if support is not None:
        wrong_target = target not in support.targets
        if wrong_target or (source and not support.allows(source, target)):
            pair = f"{language_name(source)} to " if source else ""
            raise Refused(
                f"{model.name} cannot translate {pair}{language_name(target)}; it translates "
                f"{support.describe()}."
            )
    checked = _check_text(user, text, Task.TRANSLATE)
    task_input = {"text": text, "target": target}
    if source:
        task_input["source"] = source
    with transaction.atomic():
        generation = inference.create_generation(
            user=user, model=model, task=Task.TRANSLATE, input=task_input, params={}
        )
        result = Result.objects.create(
            user=user,
            generation=generation,
            kind=Kind.TRANSLATE,
            title=f"→ {language_name(target)}: {_title(text)}"[:200],
        )
        moderation.link(checked, generation_id=generation.pk)
    return result


def classify(user: User, *, image: bytes, file_name: str, model_id: int | None) -> Result:
    """Store the image (checked by content) and queue its top labels."""
    check_can_generate(user)
    model = _model(user, Task.CLASSIFY_IMAGE, model_id)
    try:
        path = uploads.save_image(user.pk, image)
    except uploads.UploadError as exc:
        raise Refused(f"“{file_name}”: {exc}.") from None
    try:
        with transaction.atomic():
            generation = inference.create_generation(
                user=user,
                model=model,
                task=Task.CLASSIFY_IMAGE,
                input={"image": path, "top_k": TOP_K},
                params={},
            )
            return Result.objects.create(
                user=user,
                generation=generation,
                kind=Kind.CLASSIFY_IMAGE,
                title=file_name[:200] or "Image",
                file_name=file_name[:255],
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
