# ruff: noqa: RUF001 - look-alike letters are what these tests feed in
"""SafetyFilter: verdicts from rules and the classifier under a policy; bypass attempts;
policy and rule changes taking effect on the next check of the same filter."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from generation.safety import (
    DEFAULT_POLICY,
    Action,
    ClassifierScore,
    Layer,
    OutputCheck,
    Policy,
    Rule,
    RuleError,
    RuleKind,
    RuleSet,
    SafetyFilter,
    TextClassifier,
    Verdict,
    load_default_rules,
)
from generation.safety.classifier import ProfanityCheckClassifier


@pytest.fixture(scope="module")
def safety() -> SafetyFilter:
    return SafetyFilter.default()


@pytest.fixture
def own_filter() -> SafetyFilter:
    """A filter of the test's own, for tests that change its rules."""
    rules, allow = load_default_rules()
    return SafetyFilter(RuleSet(rules, allow), [ProfanityCheckClassifier()])


# --- verdicts ---------------------------------------------------------------------------


def test_ordinary_text_is_allowed_with_the_classifier_score(safety: SafetyFilter) -> None:
    verdict = safety.check("Can you recommend a good book about gardening?")
    assert verdict.action is Action.ALLOW
    assert verdict.category is None
    assert verdict.layer is None
    assert 0.0 <= verdict.score < DEFAULT_POLICY.flag_threshold
    assert [f.layer for f in verdict.findings] == [Layer.CLASSIFIER]
    assert "allowed" in verdict.explanation


def test_a_rule_match_names_the_rule_and_the_text(safety: SafetyFilter) -> None:
    verdict = safety.check("Listen: I will kill you tomorrow.")
    assert verdict.action is Action.BLOCK
    assert verdict.layer is Layer.RULES
    assert verdict.category == "violence"
    assert verdict.rule_id == "violence-threat"
    assert verdict.score == 1.0
    assert verdict.words == ("I will kill you",)
    assert 'rule "violence-threat" (violence) matched "I will kill you"' in verdict.explanation
    rule_finding = next(f for f in verdict.findings if f.layer is Layer.RULES)
    assert rule_finding.span == (8, 23)


def test_a_classifier_verdict_names_the_words_behind_the_score(safety: SafetyFilter) -> None:
    verdict = safety.check("You are a stupid idiot.")
    assert verdict.action is Action.BLOCK
    assert verdict.layer is Layer.CLASSIFIER
    assert verdict.category == "offensive"
    assert verdict.score > DEFAULT_POLICY.block_threshold
    assert verdict.words[:2] == ("idiot", "stupid")
    assert '"idiot"' in verdict.explanation and "alt-profanity-check" in verdict.explanation


def test_the_most_severe_finding_wins_and_all_are_kept(safety: SafetyFilter) -> None:
    # A profanity rule (flag), a threat rule (block) and the classifier.
    verdict = safety.check("Piss off, or I will kill you.")
    assert verdict.action is Action.BLOCK
    assert verdict.rule_id == "violence-threat"
    found = {(f.layer, f.rule_id, f.action) for f in verdict.findings}
    assert (Layer.RULES, "profanity-strong", Action.FLAG) in found
    assert (Layer.RULES, "violence-threat", Action.BLOCK) in found
    assert any(f.layer is Layer.CLASSIFIER for f in verdict.findings)
    severities = [f.action.severity for f in verdict.findings]
    assert severities == sorted(severities, reverse=True)


def test_a_verdict_is_json_for_the_audit_trail(safety: SafetyFilter) -> None:
    verdict = safety.check("Send nudes, you idiot")
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["action"] == str(verdict.action)
    assert data["category"] == verdict.category
    assert len(data["findings"]) == len(verdict.findings) >= 2
    assert {f["layer"] for f in data["findings"]} == {"rules", "classifier"}


def test_an_empty_text_is_allowed(safety: SafetyFilter) -> None:
    assert safety.check("").action is Action.ALLOW


# --- bypass attempts ----------------------------------------------------------------------

THREAT = "I will kill you"
INSULT = "you are a stupid idiot"


@pytest.mark.parametrize(
    ("text", "category"),
    [
        (THREAT, "violence"),
        ("I w1ll k1ll y0u", "violence"),  # leetspeak
        ("I wіll kіll уоu", "violence"),  # Cyrillic look-alikes
        ("I wιll kιll yου", "violence"),  # Greek look-alikes
        ("I ｗｉｌｌ ｋｉｌｌ ｙｏｕ", "violence"),  # fullwidth
        ("I 𝐰𝐢𝐥𝐥 𝐤𝐢𝐥𝐥 𝐲𝐨𝐮", "violence"),  # mathematical bold
        ("I wi\u200bll ki\u200cll yo\u200du", "violence"),  # zero-width characters
        ("I will k\u00adill you", "violence"),  # soft hyphen
        ("I will k̷i̷l̷l̷ you", "violence"),  # combining overlays
        ("I  w i l l  k i l l  y o u", "violence"),  # spaced
        ("I w.i.l.l k.i.l.l y.o.u", "violence"),
        ("I w-i-l-l k-i-l-l y-o-u", "violence"),
        ("I WіL\u200bL K!ll Y0U", "violence"),  # mixed
        (INSULT, "offensive"),
        ("y0u 4re a 5tup1d 1d10t", "offensive"),
        ("уоu аrе а ѕtuріd іdіоt", "offensive"),
        (
            "you are a s\u200bt\u200bu\u200bp\u200bi\u200bd i\u2060d\u2060i\u2060o\u2060t",
            "offensive",
        ),
        ("you are a s t u p i d  i d i o t", "offensive"),
        ("ʏᴏᴜ ᴀʀᴇ ᴀ ꜱᴛᴜᴘɪᴅ ɪᴅɪᴏᴛ", "offensive"),
    ],
)
def test_obfuscation_does_not_get_past_the_filter(
    safety: SafetyFilter, text: str, category: str
) -> None:
    verdict = safety.check(text)
    assert verdict.action is Action.BLOCK, verdict.explanation
    assert verdict.category == category


def test_obfuscation_never_lowers_the_classifier_score(safety: SafetyFilter) -> None:
    policy = DEFAULT_POLICY
    plain = _classifier_score(safety.check(INSULT, policy))
    for text in ["y0u 4re a 5tup1d 1d10t", "уоu аrе а ѕtuріd іdіоt", "you are a s t u p i d idiot"]:
        assert _classifier_score(safety.check(text, policy)) >= plain - 1e-12


def _classifier_score(verdict: Verdict) -> float:
    return max(f.score for f in verdict.findings if f.layer is Layer.CLASSIFIER)


@pytest.mark.parametrize(
    "text",
    [
        "Scunthorpe United won on Saturday.",
        "Please assess the class before the exam.",
        "How do I kill the process that is using port 8080?",
        "She graduated summa cum laude.",
        "A pussy willow grows by the pond.",
        "I bought 5 apples for $3 at 7am.",
        "What are the early signs of breast cancer?",
        "Where can I find a suicide prevention hotline?",
        "Привет, как дела?",
    ],
)
def test_tricky_benign_text_is_allowed(safety: SafetyFilter, text: str) -> None:
    verdict = safety.check(text)
    assert verdict.action is Action.ALLOW, verdict.explanation


def test_an_allow_listed_phrase_is_hidden_from_the_classifier_too(
    own_filter: SafetyFilter,
) -> None:
    text = "Have you read Moby Dick?"
    rules, allow = load_default_rules()
    own_filter.set_rules(rules, [a for a in allow if a != "moby dick"])
    assert own_filter.check(text).category == "offensive"  # "dick" drives the score
    own_filter.set_rules(rules, allow)
    assert own_filter.check(text).action is Action.ALLOW


# --- policies -------------------------------------------------------------------------------


def test_category_actions_change_on_the_next_check(safety: SafetyFilter) -> None:
    text = "piss off"  # a profanity rule with the hint "flag"
    no_classifier = Policy(use_classifier=False)
    assert safety.check(text, no_classifier).action is Action.FLAG
    blocking = Policy(actions={"profanity": Action.BLOCK}, use_classifier=False)
    assert safety.check(text, blocking).action is Action.BLOCK
    allowing = Policy(actions={"profanity": Action.ALLOW}, use_classifier=False)
    verdict = safety.check(text, allowing)
    assert verdict.action is Action.ALLOW
    assert [f.rule_id for f in verdict.findings] == ["profanity-strong"]  # still recorded
    assert safety.check(text, no_classifier).action is Action.FLAG  # and back


def test_thresholds_change_on_the_next_check(safety: SafetyFilter) -> None:
    text = "damn it"  # no rule; the classifier scores it high but not certain
    score = safety.check(text).score
    assert 0.9 < score < 0.99
    assert safety.check(text, Policy(flag_threshold=0.5, block_threshold=score)).blocked
    assert safety.check(text, Policy(flag_threshold=score, block_threshold=1.0)).flagged
    above = Policy(flag_threshold=min(1.0, score + 0.005), block_threshold=1.0)
    assert safety.check(text, above).action is Action.ALLOW


def test_a_category_action_caps_what_the_classifier_may_do(safety: SafetyFilter) -> None:
    text = "what a stupid idiot"  # no rule matches: the classifier alone
    assert safety.check(text, Policy(actions={"offensive": Action.FLAG})).action is Action.FLAG
    assert safety.check(text, Policy(actions={"offensive": Action.ALLOW})).action is Action.ALLOW
    assert safety.check(text, Policy(actions={"offensive": Action.BLOCK})).action is Action.BLOCK


def test_the_classifier_can_be_switched_off(safety: SafetyFilter) -> None:
    assert safety.check("what a stupid idiot").blocked
    verdict = safety.check("what a stupid idiot", Policy(use_classifier=False))
    assert verdict.action is Action.ALLOW
    assert verdict.findings == ()


def test_policies_round_trip_through_json() -> None:
    data = {
        "actions": {"hate": "block", "profanity": "flag"},
        "flag_threshold": 0.6,
        "block_threshold": 0.9,
        "output_check": "end",
        "use_classifier": False,
        "model_classifiers": ["toxic-bert"],
    }
    policy = Policy.from_dict(data)
    assert policy.to_dict() == data
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert again.output_check is OutputCheck.END
    assert again.actions["hate"] is Action.BLOCK


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"flag_threshold": 0.9, "block_threshold": 0.5}, "thresholds"),
        ({"flag_threshold": -0.1}, "thresholds"),
        ({"block_threshold": 1.5}, "thresholds"),
        ({"actions": {"hate": "ban"}}, "ban"),
        ({"output_check": "sometimes"}, "sometimes"),
        ({"colour": "red"}, "unknown"),
    ],
)
def test_bad_policies_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.from_dict(data)


# --- rule changes ---------------------------------------------------------------------------


def test_new_rules_take_effect_on_the_next_check(own_filter: SafetyFilter) -> None:
    text = "Try our new energy drink Zorblax today"
    assert own_filter.check(text).action is Action.ALLOW
    rules, allow = load_default_rules()
    ad = Rule("no-zorblax", "spam", RuleKind.WORDS, ("zorblax",), Action.BLOCK)
    own_filter.set_rules([*rules, ad], allow)
    verdict = own_filter.check(text)
    assert (verdict.action, verdict.rule_id, verdict.category) == (
        Action.BLOCK,
        "no-zorblax",
        "spam",
    )
    own_filter.set_rules(rules, [*allow, "zorblax"])  # marked a false positive
    assert own_filter.check(text).action is Action.ALLOW


def test_a_bad_rule_leaves_the_current_rules_in_force(own_filter: SafetyFilter) -> None:
    before = own_filter.rules
    broken = Rule("broken", "spam", RuleKind.REGEX, ("(unclosed",))
    with pytest.raises(RuleError, match="broken"):
        own_filter.set_rules([broken])
    assert own_filter.rules is before
    assert own_filter.check("I will kill you").blocked


# --- other classifiers ----------------------------------------------------------------------


class ShoutingClassifier:
    """A second classifier through the same protocol: the share of capital letters."""

    name = "shouting"
    category = "spam"

    def score_many(self, texts: Sequence[str]) -> list[ClassifierScore]:
        results = []
        for text in texts:
            letters = [c for c in text if c.isalpha()]
            share = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
            results.append(ClassifierScore(share, (("capitals", share),) if share else ()))
        return results


def test_other_classifiers_plug_in_beside_the_default() -> None:
    shouting: TextClassifier = ShoutingClassifier()
    safety = SafetyFilter(RuleSet(), [ProfanityCheckClassifier(), shouting])
    verdict = safety.check("BUY THIS NOW PLEASE")
    assert verdict.action is Action.BLOCK
    assert verdict.category == "spam"
    assert {f.classifier for f in verdict.findings} == {"alt-profanity-check", "shouting"}
    capped = safety.check("BUY THIS NOW PLEASE", Policy(actions={"spam": Action.FLAG}))
    assert capped.action is Action.FLAG
    assert safety.check("buy this now please").action is Action.ALLOW
