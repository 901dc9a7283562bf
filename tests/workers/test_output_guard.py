"""The worker checks text output as it streams: a reply that turns unsafe is cut, the
withheld text never reaches the stream, and the stored reply is the notice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from tests.webapp.test_moderation_guard import late_target
from webapp.catalog.models import ModelEntry
from webapp.inference import services, streams
from webapp.inference.models import Generation, Status
from webapp.moderation.models import Direction, ModerationEvent, Rule
from workers import model_cache
from workers.runner import run_next

pytestmark = pytest.mark.django_db

PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=300, seed=11).to_dict()
INPUT = {"system": "", "messages": [{"role": "user", "content": "Tell me a story."}]}


@pytest.fixture
def endless_model(endless_llama_dir: Path) -> ModelEntry:
    model_cache.clear()
    return ModelEntry.objects.create(
        name="tiny-endless", task="chat", source=str(endless_llama_dir), queue=DIRECT_QUEUE
    )


def reply(user: Any, model: ModelEntry) -> Generation:
    generation = services.create_generation(
        user=user, model=model, task="chat", input=INPUT, params=PARAMS
    )
    assert run_next(DIRECT_QUEUE) == generation.pk
    generation.refresh_from_db()
    return generation


def test_a_reply_that_turns_unsafe_is_cut_and_replaced_by_the_notice(
    alice: Any, endless_model: ModelEntry
) -> None:
    allowed = reply(alice, endless_model)
    assert allowed.status == Status.DONE
    target = late_target(allowed.output)
    Rule.objects.create(
        rule_id="tiny-output", category="violence", kind="regex", patterns=re.escape(target)
    )

    blocked = reply(alice, endless_model)  # the same seed: the same text, up to the block
    assert blocked.status == Status.BLOCKED and blocked.finish_reason == "blocked"
    assert blocked.output and target not in blocked.output and "violence" in blocked.output
    assert blocked.completion_tokens < allowed.completion_tokens  # generation stopped early
    events = streams.read_all(blocked.pk)
    sent = "".join(e["text"] for e in events if e["type"] == "token")
    assert target not in sent and allowed.output.startswith(sent)  # only released text
    assert events[-1]["type"] == "done" and events[-1]["status"] == "blocked"
    event = ModerationEvent.objects.get(generation=blocked, direction=Direction.OUTPUT)
    assert event.action == "block" and target in event.text  # the reviewer sees it all
