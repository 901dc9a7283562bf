"""StreamChecker: a streamed reply is checked as it grows and withheld text never reaches
the user, however the text is split into pieces."""

from __future__ import annotations

import random

import pytest

from generation.safety import (
    Action,
    OutputCheck,
    Policy,
    Rule,
    RuleKind,
    RuleSet,
    SafetyFilter,
    StreamChecker,
    StreamUpdate,
)

STREAMING = Policy()
AT_THE_END = Policy(output_check=OutputCheck.END)

BENIGN_REPLY = (
    "Sure! Here is a short overview. Photosynthesis turns light into chemical energy. "
    "Plants take in carbon dioxide and water, and they give off oxygen.\n"
    "In short: sunlight, water and air become sugar. Anything else?"
)
HARMFUL_REPLY = (
    "Sure, here is my answer. Honestly, I think that the plan is fine overall. "
    "But listen carefully: I will kill you if you ask again. Have a nice day."
)


@pytest.fixture(scope="module")
def safety() -> SafetyFilter:
    return SafetyFilter.default()


def pieces_of(text: str, seed: int) -> list[str]:
    """`text` cut at random places, as a tokenizer might (1 to 6 characters a piece)."""
    rng = random.Random(seed)
    pieces, start = [], 0
    while start < len(text):
        size = rng.randint(1, 6)
        pieces.append(text[start : start + size])
        start += size
    return pieces


def stream(
    checker: StreamChecker, pieces: list[str]
) -> tuple[str, list[StreamUpdate], StreamUpdate]:
    """Feed every piece (stopping at a block), then finish: (released text, updates, last)."""
    released, updates = "", []
    for piece in pieces:
        update = checker.feed(piece)
        updates.append(update)
        released += update.released
        if update.blocked:
            return released, updates, update
    last = checker.finish()
    updates.append(last)
    return released + last.released, updates, last


def test_a_benign_reply_is_released_whole_as_it_grows(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, STREAMING)
    released, updates, last = stream(checker, pieces_of(BENIGN_REPLY, seed=1))
    assert released == BENIGN_REPLY
    assert not last.blocked
    assert last.safe_length == len(BENIGN_REPLY)
    # Released sentence by sentence, not all at the end.
    assert sum(1 for u in updates[:-1] if u.released) >= 3
    assert checker.checks >= 4
    assert checker.verdict().action is Action.ALLOW


def test_checks_come_per_sentence_or_per_every_chars_not_per_piece(
    safety: SafetyFilter,
) -> None:
    reply = ("word " * 400) + "The end. " + ("a b " * 200)
    checker = StreamChecker(safety, STREAMING, every_chars=100)
    released, _, last = stream(checker, list(reply))  # one character a piece
    assert released == reply and not last.blocked
    assert checker.checks <= len(reply) // 100 + 3


@pytest.mark.parametrize("seed", range(12))
def test_withheld_text_is_never_released(safety: SafetyFilter, seed: int) -> None:
    checker = StreamChecker(safety, STREAMING, every_chars=24)
    released = ""
    for piece in pieces_of(HARMFUL_REPLY, seed):
        update = checker.feed(piece)
        released += update.released
        # Whatever has reached the user so far is text the filter lets through.
        assert released == HARMFUL_REPLY[: update.safe_length]
        assert not safety.check(released).blocked
        if update.blocked:
            break
    else:
        pytest.fail("the threat was never blocked")
    assert update.verdict is not None
    assert update.verdict.rule_id == "violence-threat"
    assert "kill you" not in released
    assert released.startswith("Sure, here is my answer.")
    # After a block nothing more comes out, and finishing does not release the rest.
    assert checker.feed(" more text.") == StreamUpdate("", len(released), True, update.verdict)
    assert checker.finish().released == ""
    assert checker.verdict().blocked


def test_a_word_split_across_pieces_is_held_until_it_is_whole() -> None:
    safety = SafetyFilter(RuleSet([Rule("bw", "profanity", RuleKind.WORDS, ("bad word",))]))
    checker = StreamChecker(safety, STREAMING, every_chars=5)
    first = checker.feed("This is a ba")
    assert first.released == "This is a "  # the last, partial word stays back
    second = checker.feed("d word here. And more")
    assert second.blocked
    assert second.safe_length == len("This is a ")
    assert second.verdict is not None and second.verdict.words == ("bad word",)


def test_spaced_letters_across_pieces_are_held_back(safety: SafetyFilter) -> None:
    strict = Policy(actions={"profanity": Action.BLOCK})
    checker = StreamChecker(safety, strict, every_chars=4)
    first = checker.feed("Fine. ")
    second = checker.feed("f u c")
    assert first.released + second.released == "Fine. "  # "f u c" might be a word: held
    third = checker.feed(" k y o u")
    fourth = checker.feed(" now. ")
    assert third.released == ""
    assert fourth.blocked
    assert fourth.safe_length == len("Fine. ")
    assert fourth.verdict is not None and fourth.verdict.words == ("f u c k y o u",)


def test_a_phrase_across_a_checkpoint_is_seen_in_context(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, Policy(use_classifier=False))
    first = checker.feed("Well. I will kill\n")
    assert first.released == "Well. I will kill\n"  # harmless on its own
    second = checker.feed("you. Sorry.")
    assert second.blocked
    assert second.safe_length == len("Well. I will kill\n")
    assert second.verdict is not None
    finding = next(f for f in second.verdict.findings if f.rule_id == "violence-threat")
    assert finding.span is not None
    # Spans are positions in the whole reply, not in the window that was checked.
    assert checker.text[finding.span[0] : finding.span[1]] == "I will kill\nyou"


def test_a_flag_is_recorded_but_does_not_cut_the_stream(safety: SafetyFilter) -> None:
    reply = "Oh, piss off. That was rude of me, sorry. Here is the answer you wanted."
    checker = StreamChecker(safety, Policy(use_classifier=False))
    released, _, last = stream(checker, pieces_of(reply, seed=3))
    assert released == reply
    assert not last.blocked
    verdict = checker.verdict()
    assert verdict.action is Action.FLAG
    assert verdict.rule_id == "profanity-strong"


def test_checking_at_the_end_releases_nothing_before_the_end(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, AT_THE_END)
    updates = [checker.feed(piece) for piece in pieces_of(BENIGN_REPLY, seed=5)]
    assert all(u.released == "" and u.safe_length == 0 for u in updates)
    assert checker.checks == 0
    last = checker.finish()
    assert last.released == BENIGN_REPLY
    assert checker.checks == 1


def test_checking_at_the_end_blocks_the_whole_reply(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, AT_THE_END)
    released, _, last = stream(checker, pieces_of(HARMFUL_REPLY, seed=6))
    assert last.blocked
    assert released == ""
    assert last.safe_length == 0
    assert checker.checks == 1


def test_the_policy_is_the_one_given_for_this_reply(safety: SafetyFilter) -> None:
    reply = "Oh, piss off. Fine."
    strict = Policy(actions={"profanity": Action.BLOCK}, use_classifier=False)
    _, _, last = stream(StreamChecker(safety, strict), [reply])
    assert last.blocked
    _, _, last = stream(StreamChecker(safety, Policy(use_classifier=False)), [reply])
    assert not last.blocked


def test_text_without_spaces_is_not_held_back_for_ever(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, STREAMING, every_chars=10)
    blob = "QUJD" * 20  # 80 characters, no whitespace, no sentence end
    updates = [checker.feed(blob[i : i + 4]) for i in range(0, len(blob), 4)]
    # Released whenever 4 x every_chars characters were waiting.
    assert [u.safe_length for u in updates if u.released] == [40, 80]
    assert "".join(u.released for u in updates) == blob


def test_feeding_after_finish_is_an_error(safety: SafetyFilter) -> None:
    checker = StreamChecker(safety, STREAMING)
    checker.feed("Hello.")
    checker.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        checker.feed("more")


def test_bad_settings_are_refused(safety: SafetyFilter) -> None:
    with pytest.raises(ValueError, match="every_chars"):
        StreamChecker(safety, STREAMING, every_chars=0)
