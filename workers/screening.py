"""Moderation models on the worker: the classifier layers a policy names, loaded through the
worker's model cache like any other model, and the input check they make before a task's
own model sees the request.

The web process checks every input with the rules and the built-in classifier before it
queues anything (a blocked text never becomes a Generation). A policy's moderation models
run here, where models are loaded: on the request's input before the task's model runs (a
block ends the generation as `blocked` with the notice, and the task's model never sees
the text), and on the output as it streams, in the same `OutputGuard` as the rules. (A
front end that stored the input, e.g. the chat message, hears of the block through
`inference.signals.generation_finished`.)

A policy that names a moderation model the worker cannot use (deleted, disabled, failing
to load, or neither a text classifier nor a generative safety model) fails the request with
a message that says so: text is never let through unchecked.
"""

from __future__ import annotations

import logging
from typing import Any

from generation.safety import RuleSet, SafetyFilter, TextClassifier, Verdict
from generation.safety.model_layer import layer_for
from generation.specs import GenerationError, ModelLoadError, Task
from webapp.catalog import services as catalog
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation
from webapp.moderation import config, services
from webapp.moderation.models import Direction
from workers import model_cache

log = logging.getLogger(__name__)

# Tasks whose input a moderation model checks on the worker. (A title request's input is
# a conversation whose messages were checked when they were sent.)
SCREENED_TASKS = (Task.CHAT, Task.SUMMARIZE, Task.TRANSLATE, Task.EMBED)


class ScreeningUnavailable(Exception):
    """A moderation model the policy needs cannot be used; the message says which and why."""


def model_layers(policy_models: tuple[str, ...]) -> list[TextClassifier]:
    """The classifier layers of these moderation models (catalog names), loaded."""
    layers = []
    for name in policy_models:
        entry = ModelEntry.objects.filter(name=name, task=Task.MODERATION).first()
        if entry is None or not entry.enabled:
            state = "no longer in the catalog" if entry is None else "disabled"
            raise ScreeningUnavailable(
                f"the content policy checks with moderation model {name!r}, which is {state}; "
                "nothing is generated unchecked, so ask an admin to fix the policy"
            )
        try:
            loaded = model_cache.get_model(entry)
            layers.append(layer_for(loaded))
        except (ModelLoadError, GenerationError) as exc:
            catalog.record_load_error(entry.pk, str(exc))
            raise ScreeningUnavailable(
                f"the content policy's moderation model {name!r} cannot be used, so nothing "
                f"is generated unchecked: {exc}"
            ) from exc
        if entry.last_error or entry.last_loaded_at is None:
            catalog.record_loaded(entry.pk)
    return layers


def input_texts(generation: Generation) -> list[str]:
    """What of the request's input reaches the task's model and is new: a chat's latest user
    message and its system prompt, a text to summarize or translate, texts to embed."""
    data: Any = generation.input or {}
    texts: list[Any] = []
    if generation.task == Task.CHAT:
        users = [m for m in data.get("messages") or [] if m.get("role") == "user"]
        texts = [users[-1].get("content")] if users else []
        texts += [data.get("system"), data.get("prompt")]  # a completion's prompt
    elif generation.task in (Task.SUMMARIZE, Task.TRANSLATE):
        texts = [data.get("text")]
    elif generation.task == Task.EMBED:
        texts = list(data.get("texts") or [])
    return [text for text in texts if isinstance(text, str) and text.strip()]


def screen_input(
    generation: Generation, named: config.NamedPolicy, layers: list[TextClassifier]
) -> Verdict | None:
    """Check the request's input with the moderation models and record the verdict (the
    web process recorded its own, of the rules and the built-in classifier). Returns the
    most severe verdict, or None when there was nothing to check."""
    texts = input_texts(generation) if generation.task in SCREENED_TASKS else []
    if not layers or not texts:
        return None
    # The models only (the rules and the built-in classifier ran before queueing), with the
    # allow-list, so that a false positive marked in the review queue passes from then on.
    safety = SafetyFilter(_allow_list_only(), models=layers)
    checked = [(safety.check(text, named.policy), text) for text in texts]
    verdict, text = max(checked, key=lambda pair: (pair[0].action.severity, pair[0].score))
    services.record_verdict(
        generation.user,
        verdict,
        direction=Direction.INPUT,
        task=generation.task,
        text=text,
        context=_context(generation),
        policy=named.name,
        generation_id=generation.pk,
    )
    return verdict


_allow_only: tuple[str, RuleSet] | None = None


def _allow_list_only() -> RuleSet:
    """The allow-list in force, without the rules (rebuilt when the configuration changes)."""
    global _allow_only
    current = config.current()
    if _allow_only is None or _allow_only[0] != current.token:
        _allow_only = (current.token, RuleSet((), current.safety.rules.allow))
    return _allow_only[1]


def _context(generation: Generation) -> str:
    """What a chat's latest message answers (the turn before it), for the reviewer."""
    turns: Any = (generation.input or {}).get("messages") if generation.task == Task.CHAT else None
    if not isinstance(turns, list) or len(turns) < 2 or not isinstance(turns[-2], dict):
        return ""
    return str(turns[-2].get("content") or "")
