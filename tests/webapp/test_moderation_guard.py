"""The output guard against a real streamed generation of a tiny model: an admin rule that
matches the model's output cuts the stream, the withheld text never reaches the user, the
reply is replaced by a notice, and the verdict is recorded for review."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from generation.loading import LoadedModel, load_causal_lm
from generation.specs import ModelSpec, SamplingParams
from generation.streaming import TokenStream
from webapp.chat.models import Conversation, Message
from webapp.inference.models import Generation
from webapp.moderation.guard import OutputGuard
from webapp.moderation.models import AuditEntry, ModerationEvent, Policy, Rule

pytestmark = pytest.mark.django_db

# Sampled (seeded, so repeatable) rather than greedy: the tiny model's greedy output is one
# token repeated, while sampling gives varied text to find a rule's target in.
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=400, seed=11)


@pytest.fixture(scope="module")
def endless(endless_llama_dir: Path) -> LoadedModel:
    return load_causal_lm(ModelSpec(name="tiny-endless", source=str(endless_llama_dir)))


def stream(loaded: LoadedModel, on_text: Any, should_stop: Any = lambda: False) -> TokenStream:
    prompt = list(loaded.tokenizer("Hello there")["input_ids"])
    tokens = TokenStream(loaded, prompt, PARAMS, should_stop)
    tokens.run(on_text)
    return tokens


def late_target(text: str) -> str:
    """A run of lowercase letters that first occurs in the second half of the text."""
    half = len(text) // 2
    for match in re.finditer(r"[a-z]{3,}", text[half:]):
        word = match.group()
        if text.find(word) >= half:
            return word
    raise AssertionError(f"no late letter run in {text!r}")


@pytest.fixture
def generation(alice: Any, chat_model: Any) -> Generation:
    made = Generation.objects.create(
        user=alice, model=chat_model, model_name=chat_model.name, task="chat", input={}
    )
    conversation = Conversation.objects.create(user=alice, title="t")
    Message.objects.create(conversation=conversation, role="assistant", generation=made)
    return made


def test_a_rule_matching_the_output_cuts_the_stream_and_withholds_the_rest(
    endless: LoadedModel, generation: Generation
) -> None:
    unguarded: list[str] = []
    stream(endless, unguarded.append)
    full = "".join(unguarded)
    target = late_target(full)
    Rule.objects.create(
        rule_id="tiny-output", category="violence", kind="regex", patterns=re.escape(target)
    )

    guard = OutputGuard.for_generation(generation)
    assert guard.streaming
    sent: list[str] = []

    def on_text(piece: str) -> None:
        released = guard.feed(piece)
        if released:
            sent.append(released)

    tokens = stream(endless, on_text, should_stop=lambda: guard.blocked is not None)
    if guard.blocked is None:
        sent.append(guard.finish())
    verdict = guard.blocked
    assert verdict is not None, f"{target!r} in {full!r} was not caught"
    assert verdict.category == "violence" and verdict.rule_id == "tiny-output"
    released = "".join(sent)
    assert full.startswith(released) and len(released) < len(full)
    assert released, "text before the match was released as it streamed"
    finding = next(f for f in verdict.findings if f.rule_id == "tiny-output")
    assert finding.span is not None and finding.span[1] > len(released)  # never sent
    assert tokens.stats.completion_tokens < PARAMS.max_new_tokens  # generation was stopped
    assert guard.finish() == ""  # nothing more, ever
    assert "withheld" in guard.notice and "violence" in guard.notice

    event = guard.record(generation.pk)
    assert event is not None
    stored = ModerationEvent.objects.get()
    assert stored.direction == "output" and stored.action == "block"
    assert stored.generation_id == generation.pk
    assert stored.text.startswith(released) and len(stored.text) > len(released)
    assert AuditEntry.objects.filter(action="output.block", target_id=str(stored.pk)).exists()
    assert guard.record(generation.pk) is None  # recorded once


def test_checking_at_the_end_releases_nothing_until_the_reply_has_passed(
    endless: LoadedModel, generation: Generation
) -> None:
    Policy.objects.create(name="end only", output_check="end")
    guard = OutputGuard.for_generation(generation)
    assert not guard.streaming
    early: list[str] = []
    fed: list[str] = []

    def on_text(piece: str) -> None:
        fed.append(piece)
        early.append(guard.feed(piece))

    stream(endless, on_text)
    assert "".join(early) == ""
    rest = guard.finish()
    assert guard.blocked is None and rest == "".join(fed)
    assert guard.record(generation.pk) is None  # allowed: audited, not queued for review
    entry = AuditEntry.objects.get()
    assert entry.action == "output.allow" and entry.details["generation"] == generation.pk
    assert entry.target_type == "generation" and entry.target_id == str(generation.pk)


def test_a_flagged_output_streams_on_and_is_recorded(
    endless: LoadedModel, generation: Generation
) -> None:
    full: list[str] = []
    stream(endless, full.append)
    target = late_target("".join(full))
    Rule.objects.create(
        rule_id="tiny-flag", category="spam", kind="regex", patterns=re.escape(target)
    )
    Policy.objects.create(name="flag spam", flag_categories="spam")
    guard = OutputGuard.for_generation(generation)
    sent = [guard.feed(piece) for piece in full]
    sent.append(guard.finish())
    assert guard.blocked is None and "".join(sent) == "".join(full)
    assert guard.notice == ""
    event = guard.record(generation.pk)
    assert event is not None and event.action == "flag" and event.category == "spam"
