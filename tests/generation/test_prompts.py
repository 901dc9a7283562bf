"""build_chat_input: the chat template, dropping old turns, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from generation.loading import LoadedModel
from generation.prompts import ChatTurn, build_chat_input
from generation.specs import GenerationError

CONVERSATION: list[ChatTurn] = [
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hi! How can I help you today?"},
    {"role": "user", "content": "What is the capital of France?"},
]


def chatml(turns: list[ChatTurn]) -> str:
    body = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)
    return body + "<|im_start|>assistant\n"


def test_chat_input_renders_system_prompt_and_turns_with_the_template(
    llama: LoadedModel,
) -> None:
    ids = build_chat_input(
        llama.tokenizer, CONVERSATION, system="You are terse.", max_prompt_tokens=500
    )
    assert all(isinstance(i, int) for i in ids)
    text = llama.tokenizer.decode(ids)
    expected = chatml([{"role": "system", "content": "You are terse."}, *CONVERSATION])
    assert text == expected
    # ... in order, ending with the generation prompt.
    positions = [
        text.index("<|im_start|>system\nYou are terse.<|im_end|>"),
        text.index("<|im_start|>user\nHello there<|im_end|>"),
        text.index("<|im_start|>assistant\nHi! How can I help you today?<|im_end|>"),
        text.index("<|im_start|>user\nWhat is the capital of France?<|im_end|>"),
    ]
    assert positions == sorted(positions)
    assert text.endswith("<|im_start|>assistant\n")


def test_chat_input_special_markers_are_single_tokens(llama: LoadedModel) -> None:
    tokenizer = llama.tokenizer
    ids = build_chat_input(tokenizer, CONVERSATION[:1], max_prompt_tokens=500)
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids[0] == start
    assert ids.count(start) == 2  # the user turn and the generation prompt
    assert ids.count(end) == 1


def test_chat_input_without_system_prompt_has_no_system_turn(llama: LoadedModel) -> None:
    ids = build_chat_input(llama.tokenizer, CONVERSATION, max_prompt_tokens=500)
    text = llama.tokenizer.decode(ids)
    assert text == chatml(CONVERSATION)
    assert "<|im_start|>system" not in text


def test_chat_input_drops_oldest_turns_to_fit_and_keeps_the_system_prompt(
    llama: LoadedModel,
) -> None:
    tokenizer = llama.tokenizer
    turns: list[ChatTurn] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: the quick fox"}
        for i in range(6)
    ]
    system = "Be brief."
    full = build_chat_input(tokenizer, turns, system=system, max_prompt_tokens=10_000)
    last_two = build_chat_input(tokenizer, turns[-2:], system=system, max_prompt_tokens=10_000)
    last_three = build_chat_input(tokenizer, turns[-3:], system=system, max_prompt_tokens=10_000)
    assert len(last_two) < len(last_three) < len(full)

    # Room for exactly the last two turns: the four oldest are dropped.
    ids = build_chat_input(tokenizer, turns, system=system, max_prompt_tokens=len(last_two))
    assert ids == last_two
    text = tokenizer.decode(ids)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    for i in range(4):
        assert f"turn {i}:" not in text
    assert text.index("turn 4:") < text.index("turn 5:")

    # One token short of three turns still gives two.
    ids = build_chat_input(tokenizer, turns, system=system, max_prompt_tokens=len(last_three) - 1)
    assert ids == last_two


def test_chat_input_keeps_everything_when_it_fits_exactly(llama: LoadedModel) -> None:
    full = build_chat_input(llama.tokenizer, CONVERSATION, max_prompt_tokens=10_000)
    assert build_chat_input(llama.tokenizer, CONVERSATION, max_prompt_tokens=len(full)) == full


def test_chat_input_always_keeps_the_last_turn(llama: LoadedModel) -> None:
    tokenizer = llama.tokenizer
    only_last = build_chat_input(tokenizer, CONVERSATION[-1:], max_prompt_tokens=10_000)
    ids = build_chat_input(tokenizer, CONVERSATION, max_prompt_tokens=len(only_last))
    assert ids == only_last
    assert "What is the capital of France?" in tokenizer.decode(ids)


def test_chat_input_raises_when_the_last_turn_alone_is_too_long(llama: LoadedModel) -> None:
    tokenizer = llama.tokenizer
    only_last = build_chat_input(tokenizer, CONVERSATION[-1:], max_prompt_tokens=10_000)
    with pytest.raises(GenerationError, match="too long") as caught:
        build_chat_input(
            tokenizer,
            CONVERSATION,
            max_prompt_tokens=len(only_last) - 1,
            model_name="tiny-llama",
        )
    assert "tiny-llama" in str(caught.value)
    assert str(len(only_last)) in str(caught.value)


def test_chat_input_raises_without_messages(llama: LoadedModel) -> None:
    with pytest.raises(GenerationError, match="at least one message"):
        build_chat_input(llama.tokenizer, [], system="Be brief.", max_prompt_tokens=500)


@pytest.mark.parametrize("template", [None, ""])
def test_chat_input_raises_naming_the_model_without_a_chat_template(
    tiny_llama_folder: Path, template: str | None
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_folder))  # a private copy
    assert tokenizer.chat_template
    tokenizer.chat_template = template
    with pytest.raises(GenerationError, match="chat template") as caught:
        build_chat_input(
            tokenizer, CONVERSATION, max_prompt_tokens=500, model_name="plain-base-model"
        )
    assert "plain-base-model" in str(caught.value)


def test_chat_input_matches_between_model_families(llama: LoadedModel, gpt2: LoadedModel) -> None:
    # Both tiny models share one trained tokenizer and template.
    a = build_chat_input(llama.tokenizer, CONVERSATION, system="S", max_prompt_tokens=500)
    b = build_chat_input(gpt2.tokenizer, CONVERSATION, system="S", max_prompt_tokens=500)
    assert a == b
