# ruff: noqa: RUF001, RUF003 - look-alike letters are what these tests feed in
"""Rules: word lists and regular expressions with categories, matched on normalized text;
the allow-list; the shipped defaults."""

from __future__ import annotations

import json

import pytest

from generation.safety.normalize import normalize
from generation.safety.rules import (
    CATEGORIES,
    Action,
    Rule,
    RuleError,
    RuleKind,
    RuleSet,
    default_rule_data,
    load_default_rules,
)


def words(rule_id: str, *patterns: str, category: str = "profanity") -> Rule:
    return Rule(rule_id, category, RuleKind.WORDS, patterns, Action.FLAG)


def regex(rule_id: str, *patterns: str, category: str = "spam") -> Rule:
    return Rule(rule_id, category, RuleKind.REGEX, patterns, Action.BLOCK)


def matched(rules: RuleSet, text: str) -> list[tuple[str, str]]:
    """(rule id, original text) of each match, in order."""
    return [(m.rule.id, m.original) for m in rules.scan(normalize(text)).matches]


@pytest.fixture(scope="module")
def swear() -> RuleSet:
    return RuleSet([words("swear", "ass", "fuck*", "*fucker", "loser", "kill yourself")])


@pytest.mark.parametrize(
    "text",
    ["class", "assess", "bass guitar", "passive", "assassin", "Massachusetts", "grass"],
)
def test_words_match_whole_words_only(swear: RuleSet, text: str) -> None:
    assert matched(swear, text) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("you ass", "ass"),
        ("what an ASS!", "ASS"),
        ("a$$", "a$$"),
        ("@ss", "@ss"),
        ("ａｓｓ", "ａｓｓ"),
        ("aaasss", "aaasss"),  # letters may repeat
        ("a\u200bss", "a\u200bss"),
        ("а s s", "а s s"),  # Cyrillic а, spaced
        ("fucking", "fucking"),  # trailing * allows a suffix
        ("motherfucker", "motherfucker"),  # leading * allows a prefix
        ("1oser", "1oser"),  # "1" reads as "l" too
        ("|oser", "|oser"),
        ("killyourself", "killyourself"),  # a phrase's words may run together
        ("kill   yourself", "kill   yourself"),
        ("k i l l  y o u r s e l f", "k i l l  y o u r s e l f"),
    ],
)
def test_words_match_through_obfuscation(swear: RuleSet, text: str, found: str) -> None:
    assert matched(swear, text) == [("swear", found)]


def test_spacing_that_erased_a_word_boundary_still_matches(swear: RuleSet) -> None:
    # "you are a l o s e r": the one-letter word "a" runs into the spaced word.
    assert matched(swear, "you are a l o s e r") == [("swear", "l o s e r")]
    # ...but a short word inside a longer spaced word is not a match.
    assert matched(swear, "p a s s w o r d") == []


def test_a_match_names_its_rule_pattern_and_place() -> None:
    rules = RuleSet([words("one", "idiot"), words("two", "moron", category="harassment")])
    scan = rules.scan(normalize("Hi 1d10t and M O R O N"))
    assert [(m.rule.id, m.pattern, m.matched, m.span, m.original) for m in scan.matches] == [
        ("one", "idiot", "idiot", (3, 8), "1d10t"),
        ("two", "moron", "moron", (13, 22), "M O R O N"),
    ]
    assert scan.matches[1].rule.category == "harassment"


def test_regexes_match_normalized_and_folded_text() -> None:
    rules = RuleSet(
        [
            regex("pills", r"\bbuy\s+cheap\s+pills\b"),
            regex("email", r"\b[\w.]+@[\w-]+\.\w+\b", category="pii"),
        ]
    )
    # Leetspeak is undone for the first; the e-mail is matched as written (the folded
    # text), although normalization reads its "@" as "a".
    assert matched(rules, "8UY CH34P P1LLS, mail b0b@example.com") == [
        ("pills", "8UY CH34P P1LLS"),
        ("email", "b0b@example.com"),
    ]


def test_regexes_ignore_case_however_they_are_written() -> None:
    rules = RuleSet([regex("lower", r"\bbuy now\b"), regex("upper", r"\bBUY\s+NOW\b")])
    assert matched(rules, "Buy Now!") == [("lower", "Buy Now"), ("upper", "Buy Now")]


def test_a_pattern_matched_in_two_readings_is_reported_once() -> None:
    rules = RuleSet([regex("word", r"\bidiot\b")])
    assert matched(rules, "1d1ot") == [("word", "1d1ot")]


def test_allow_list_suppresses_matches_inside_allowed_phrases() -> None:
    rules = RuleSet(
        [words("cat", "pussy", category="sexual")], allow=["pussy willow", "Pussy Cat Dolls"]
    )
    scan = rules.scan(normalize("A pussy willow, the pussy cat dolls, and pussy."))
    assert [m.original for m in scan.matches] == ["pussy"]
    assert [m.original for m in scan.suppressed] == ["pussy", "pussy"]
    assert len(scan.allowed_spans) == 2
    # Allowed phrases are normalized like everything else.
    assert matched(rules, "a puѕѕy w1llow") == []


def test_disabled_rules_are_left_out() -> None:
    rule = Rule("off", "spam", RuleKind.WORDS, ("offer",), enabled=False)
    rules = RuleSet([rule])
    assert rules.rules == ()
    assert matched(rules, "special offer") == []


def test_a_rule_set_with_no_rules_matches_nothing() -> None:
    assert RuleSet().scan(normalize("anything at all")).matches == ()


def test_many_words_compile_into_one_expression() -> None:
    vocabulary = [f"w{n:04d}x" for n in range(2000)]
    rules = RuleSet([words("big", *vocabulary)])
    assert matched(rules, "say w1234x and w0001x, not w99999x") == [
        ("big", "w1234x"),
        ("big", "w0001x"),
    ]


def test_rules_come_from_plain_data() -> None:
    row = {
        "id": "r1",
        "category": "harassment",
        "kind": "words",
        "patterns": "idiot\n  moron \n\n",  # one per line, as typed in a form
        "action": "flag",
        "description": "insults",
        "enabled": True,
    }
    rule = Rule.from_dict(row)
    assert rule.patterns == ("idiot", "moron")
    assert rule.kind is RuleKind.WORDS
    assert rule.action is Action.FLAG
    assert Rule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


VALID = {"id": "x", "category": "spam", "kind": "words", "patterns": ["a"], "action": "flag"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patterns": []}, "no patterns"),
        ({"category": "Spam!"}, "lowercase slug"),
        ({"kind": "glob"}, "glob"),
        ({"action": "ban"}, "ban"),
        ({"id": ""}, "needs an id"),
        ({"colour": 1}, "unknown"),
        ({"patterns": None}, "missing"),
    ],
)
def test_malformed_rules_are_refused_with_a_reason(
    changes: dict[str, object], message: str
) -> None:
    data = {**VALID, **changes}
    data = {key: value for key, value in data.items() if value is not None}
    with pytest.raises(RuleError, match=message):
        Rule.from_dict(data)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (regex("bad-regex", "(unclosed"), "bad-regex.*bad regular expression"),
        (words("star", "f*ck"), "star.*only at its start or end"),
        (words("empty", "*"), "empty"),
        (words("punct", "!!!"), "no letters or digits"),
    ],
)
def test_rules_that_cannot_compile_are_refused(rule: Rule, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        RuleSet([rule])


def test_duplicate_rule_ids_are_refused() -> None:
    with pytest.raises(RuleError, match="duplicate"):
        RuleSet([words("same", "a1"), words("same", "b1")])


def test_the_shipped_defaults_load_and_use_known_categories() -> None:
    data = default_rule_data()
    rules, allow = load_default_rules()
    assert len(rules) == len(data["rules"]) >= 8
    assert {rule.category for rule in rules} <= set(CATEGORIES)
    assert len({rule.id for rule in rules}) == len(rules)
    assert {"pussy willow", "cum laude"} <= set(allow)
    compiled = RuleSet(rules, allow)
    # Each rule as the web app would store it and pass it back.
    assert RuleSet([Rule.from_dict(r.to_dict()) for r in rules], allow).rules == compiled.rules


@pytest.mark.parametrize(
    ("text", "rule_id"),
    [
        ("I will kill you", "violence-threat"),
        ("i'm gonna stab you", "violence-threat"),
        ("kys", "harassment-self-harm-incitement"),
        ("you are a worthless loser", "harassment-insult"),
        ("I want to kill myself", "self-harm"),
        ("send nudes", "sexual-explicit"),
        ("all those migrants should be wiped out", "hate-dehumanizing"),
        ("buy cheap viagra", "spam-commercial"),
        ("card 4111 1111 1111 1111", "pii-financial"),
        ("mail me at someone@example.org", "pii-email"),
        ("what a load of bullshit", "profanity-strong"),
    ],
)
def test_the_shipped_defaults_catch_each_category(text: str, rule_id: str) -> None:
    rules, allow = load_default_rules()
    assert rule_id in {m.rule.id for m in RuleSet(rules, allow).scan(normalize(text)).matches}


@pytest.mark.parametrize(
    "text",
    [
        "Scunthorpe United",
        "assess the class",
        "kill the process on port 8080",
        "She graduated summa cum laude",
        "a pussy willow by the pond",
        "Document the cumulative totals",
        "Have you read Moby Dick?",
        "I'll beat you at chess",
        "Shoot me an email",
    ],
)
def test_the_shipped_defaults_leave_tricky_benign_text_alone(text: str) -> None:
    rules, allow = load_default_rules()
    assert RuleSet(rules, allow).scan(normalize(text)).matches == ()
