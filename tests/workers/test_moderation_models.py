"""A policy's moderation models (catalog task "moderation") run on the worker like any other
model: they check a request's input before the task's model sees it, and the output as it
streams; a policy whose model cannot be used fails requests instead of letting them through.
The models are real trained tiny ones (a BERT toxicity classifier, a Llama Guard-style judge).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from tests.tiny.moderation import build_tiny_toxicity_classifier
from tests.webapp.test_moderation_guard import late_target
from webapp.catalog.models import ModelEntry
from webapp.chat import services as chat
from webapp.chat.models import Message
from webapp.inference import services, streams
from webapp.inference.models import INPUT_BLOCKED, Generation, Status
from webapp.moderation import services as moderation
from webapp.moderation.models import AuditEntry, Direction, ModerationEvent, Policy
from workers import model_cache
from workers.runner import run_next

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache() -> Any:
    model_cache.clear()
    yield
    model_cache.clear()


def moderation_entry(name: str, source: Path) -> ModelEntry:
    return ModelEntry.objects.create(
        name=name, task="moderation", source=str(source), queue=DIRECT_QUEUE
    )


def policy_with(*entries: ModelEntry, builtin: bool = False, **fields: Any) -> Policy:
    policy = Policy.objects.create(name="with models", use_classifier=builtin, **fields)
    policy.classifier_models.set(entries)
    return policy


def send(user: Any, content: str, conversation_id: int | None = None) -> chat.Posted:
    return chat.post_message(
        user,
        content=content,
        conversation_id=conversation_id,
        model_id=None,
        system=None,
        params=SamplingParams(max_new_tokens=8, seed=1),
    )


def run(posted: chat.Posted) -> Generation:
    generation_id = posted.assistant_message.generation_id
    assert run_next(DIRECT_QUEUE) == generation_id
    return Generation.objects.get(pk=generation_id)


def test_a_moderation_model_blocks_an_input_the_web_check_let_through(
    alice: Any,
    chat_model: ModelEntry,
    tiny_toxicity_dir: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    policy_with(moderation_entry("tiny-toxic", tiny_toxicity_dir))
    posted = send(alice, "you are a grumbleflax")  # no rule knows the word: it is queued
    with django_capture_on_commit_callbacks(execute=True):  # generation_finished: chat hears
        generation = run(posted)
    assert generation.status == Status.BLOCKED and generation.finish_reason == INPUT_BLOCKED
    assert generation.completion_tokens == 0  # the chat model never ran
    assert "(insult)" in generation.output and "not sent to the model" in generation.output
    events = streams.read_all(generation.pk)
    assert not [e for e in events if e["type"] == "token"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "blocked"
    event = ModerationEvent.objects.get(direction=Direction.INPUT, action="block")
    assert event.generation_id == generation.pk
    assert Message.objects.get(pk=posted.user_message.pk).blocked_by_id == event.pk
    assert "tiny-toxic scored" in event.explanation and "grumbleflax" in event.explanation
    # The blocked message is marked as such and left out of the next reply's history.
    posted.conversation.refresh_from_db()
    assert posted.conversation.title == chat.BLOCKED_TITLE  # not the blocked text
    following = send(alice, "tell me about the lazy dog", posted.conversation.pk)
    history = Generation.objects.get(pk=following.assistant_message.generation_id)
    assert "grumbleflax" not in str(history.input["messages"])
    assert run(following).status == Status.DONE


def test_a_benign_input_passes_and_both_verdicts_are_audited(
    alice: Any, chat_model: ModelEntry, tiny_toxicity_dir: Path
) -> None:
    policy_with(moderation_entry("tiny-toxic", tiny_toxicity_dir), builtin=True)
    posted = send(alice, "the quick brown fox")
    assert run(posted).status == Status.DONE
    allowed = AuditEntry.objects.filter(action="input.allow")
    assert allowed.count() == 2  # the web process's check, then the model's on the worker
    assert any("tiny-toxic" in str(entry.details) for entry in allowed)


def test_a_generative_safety_model_blocks_with_its_hazard_category(
    alice: Any, chat_model: ModelEntry, tiny_judge_dir: Path
) -> None:
    policy_with(moderation_entry("tiny-judge", tiny_judge_dir))
    generation = run(send(alice, "all grumbleflax people"))
    assert generation.status == Status.BLOCKED and "(hate)" in generation.output
    event = ModerationEvent.objects.get(direction=Direction.INPUT)
    assert 'answered "unsafe S10"' in event.explanation


def test_summaries_and_embeddings_take_the_same_road(
    alice: Any, endless_llama_dir: Path, tiny_toxicity_dir: Path
) -> None:
    policy_with(moderation_entry("tiny-toxic", tiny_toxicity_dir))
    summarizer = ModelEntry.objects.create(
        name="tiny-summarizer", task="summarize", source=str(endless_llama_dir), queue=DIRECT_QUEUE
    )
    for task, data in (
        ("summarize", {"text": "The lazy dog met a snorbwick at noon."}),
        ("embed", {"texts": ["a fine day", "snorbwick"]}),
    ):
        generation = services.create_generation(
            user=alice, model=summarizer, task=task, input=data, params={}
        )
        assert run_next(DIRECT_QUEUE) == generation.pk
        generation.refresh_from_db()
        assert generation.status == Status.BLOCKED, task
        assert "(threat)" in generation.output


def test_a_reply_that_turns_harmful_is_cut_by_the_model_as_it_streams(
    alice: Any, endless_llama_dir: Path, tmp_path: Path
) -> None:
    chat_entry = ModelEntry.objects.create(
        name="tiny-endless", task="chat", source=str(endless_llama_dir), queue=DIRECT_QUEUE
    )
    data = {"system": "", "messages": [{"role": "user", "content": "Tell me a story."}]}
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=300, seed=11).to_dict()

    def reply() -> Generation:
        generation = services.create_generation(
            user=alice, model=chat_entry, task="chat", input=data, params=params
        )
        assert run_next(DIRECT_QUEUE) == generation.pk
        generation.refresh_from_db()
        return generation

    allowed = reply()
    target = late_target(allowed.output)
    # A classifier that learnt the target word (a whole word in the reply) as an insult.
    words = re.findall(r"\w+", allowed.output)
    word = next(
        w for w in words if target in w and allowed.output.find(w) >= len(allowed.output) // 2
    )
    folder = build_tiny_toxicity_classifier(tmp_path / "learnt", {word.lower(): "insult"})
    policy_with(moderation_entry("learnt", folder))

    blocked = reply()  # the same seed: the same text, up to the block
    assert blocked.status == Status.BLOCKED and blocked.finish_reason == "blocked"
    assert blocked.completion_tokens < allowed.completion_tokens
    sent = "".join(e["text"] for e in streams.read_all(blocked.pk) if e["type"] == "token")
    assert word not in sent and allowed.output.startswith(sent)
    event = ModerationEvent.objects.get(generation=blocked, direction=Direction.OUTPUT)
    assert event.category == "insult" and "learnt scored" in event.explanation


def test_a_policy_whose_model_cannot_be_used_fails_requests_instead_of_skipping_the_check(
    alice: Any, chat_model: ModelEntry, tiny_toxicity_dir: Path, tmp_path: Path
) -> None:
    entry = moderation_entry("tiny-toxic", tiny_toxicity_dir)
    policy = policy_with(entry)
    ModelEntry.objects.filter(pk=entry.pk).update(enabled=False)
    failed = run(send(alice, "the lazy dog"))
    assert failed.status == Status.FAILED and failed.completion_tokens == 0
    assert "moderation model 'tiny-toxic', which is disabled" in failed.error

    broken = moderation_entry("broken", tmp_path)  # no model in that folder
    policy.classifier_models.set([broken])
    failed = run(send(alice, "the lazy dog"))
    assert failed.status == Status.FAILED and "'broken' cannot be used" in failed.error
    assert ModelEntry.objects.get(pk=broken.pk).last_error  # shown in the catalog admin

    policy.classifier_models.clear()  # in force at once: no restart
    assert run(send(alice, "the lazy dog")).status == Status.DONE


def test_a_moderation_model_answers_requests_of_its_own(
    alice: Any, tiny_toxicity_dir: Path
) -> None:
    entry = moderation_entry("tiny-toxic", tiny_toxicity_dir)
    generation = services.create_generation(
        user=alice,
        model=entry,
        task="moderation",
        input={"texts": ["the lazy dog", "a snorbwick"]},
        params={},
    )
    assert run_next(DIRECT_QUEUE) == generation.pk
    generation.refresh_from_db()
    assert generation.status == Status.DONE
    low, high = generation.result["scores"]
    assert low["score"] < 0.1 and high["score"] > 0.9
    assert high["category"] == "threat" and high["words"] == ["snorbwick"]
    assert generation.prompt_tokens >= 2 * 3  # its usage: the tokens read (with [CLS], [SEP])


def test_the_strictest_policy_runs_every_groups_models(
    alice: Any, tiny_toxicity_dir: Path, tiny_judge_dir: Path
) -> None:
    from django.contrib.auth.models import Group

    from webapp.moderation import config

    first, second = Group.objects.create(name="a"), Group.objects.create(name="b")
    alice.groups.add(first, second)
    one = Policy.objects.create(name="one", group=first)
    one.classifier_models.set([moderation_entry("tiny-toxic", tiny_toxicity_dir)])
    two = Policy.objects.create(name="two", group=second, use_classifier=False)
    two.classifier_models.set([moderation_entry("tiny-judge", tiny_judge_dir)])
    named = config.policy_for(alice)
    assert named.policy.model_classifiers == ("tiny-judge", "tiny-toxic")
    assert named.policy.use_classifier
    # Renaming a model is seen at once (the policy refers to the entry).
    judge = ModelEntry.objects.get(name="tiny-judge")
    judge.name = "judge v2"
    judge.save()
    assert config.policy_for(alice).policy.model_classifiers == ("judge v2", "tiny-toxic")


def test_a_false_positive_from_the_queue_lets_the_same_text_past_the_model(
    alice: Any, make_user: Any, chat_model: ModelEntry, tiny_toxicity_dir: Path
) -> None:
    admin = make_user("root", role="admin")
    policy_with(moderation_entry("tiny-toxic", tiny_toxicity_dir))
    assert run(send(alice, "my grumbleflax recipe")).status == Status.BLOCKED
    event = ModerationEvent.objects.get(direction=Direction.INPUT)
    assert moderation.suggested_phrases(event) == ["grumbleflax"]
    moderation.mark_false_positive(event, admin, ["grumbleflax"])
    assert run(send(alice, "my grumbleflax recipe")).status == Status.DONE
