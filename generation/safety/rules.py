"""Admin-managed rules: word lists and regular expressions, each with a category and an
action hint, matched on normalized text; and an allow-list of phrases that are fine.

Rules are plain data (`Rule.from_dict` takes what a database row or the shipped
default_rules.json holds). A `RuleSet` compiles them once: all word lists into one regular
expression shaped like a trie, so a check costs one pass over the text however long the
lists grow.

Word patterns: a word or a phrase, matched as whole words ("ass" does not match "class"),
with each letter allowed to repeat ("fuuuck") and "i"/"l" read as each other (leetspeak
"1" is both). Words of a phrase may be run together ("killyourself"). A leading or
trailing "*" allows any prefix or suffix ("fuck*" matches "fucking"). Inside a run of
s p a c e d letters words are also found without word boundaries, since the spacing has
erased them ("a b i t c h" reads "abitch"): at either end of the run, or anywhere when
five letters or longer.

Regex patterns: Python regular expressions, case-insensitive, searched both in the fully
normalized text and in the folded text (Unicode and case only, no leetspeak), so that
digits, e-mail addresses and URLs are matched as written.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

from generation.safety.normalize import NormalizedText, normalize


class Action(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.FLAG: 1, Action.BLOCK: 2}


class RuleKind(StrEnum):
    WORDS = "words"
    REGEX = "regex"


# The categories the default rules and the shipped classifier use; admins may add others.
CATEGORIES = (
    "hate",
    "harassment",
    "sexual",
    "violence",
    "self_harm",
    "profanity",
    "offensive",
    "spam",
    "pii",
)
_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,39}")
_RULE_FIELDS = frozenset({"id", "category", "kind", "patterns", "action", "description", "enabled"})


class RuleError(ValueError):
    """A rule or an allow-list entry is malformed; the message names it."""


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    kind: RuleKind
    patterns: tuple[str, ...]
    action: Action = Action.BLOCK  # a hint: the policy's action for the category wins
    description: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise RuleError(f"a rule needs an id (got {self.id!r})")
        if not isinstance(self.category, str) or not _CATEGORY.fullmatch(self.category):
            raise RuleError(
                f"rule {self.id!r}: category {self.category!r} must be a lowercase slug"
            )
        try:
            object.__setattr__(self, "kind", RuleKind(self.kind))
            object.__setattr__(self, "action", Action(self.action))
        except ValueError as exc:
            raise RuleError(f"rule {self.id!r}: {exc}") from exc
        patterns = self.patterns
        if isinstance(patterns, str):  # one per line, as an admin types them
            patterns = tuple(line for line in patterns.splitlines())
        patterns = tuple(p.strip() for p in patterns if p.strip())
        if not patterns:
            raise RuleError(f"rule {self.id!r} has no patterns")
        object.__setattr__(self, "patterns", patterns)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """From a database row or the shipped JSON; unknown keys are an error."""
        unknown = set(data) - _RULE_FIELDS
        if unknown:
            raise RuleError(f"rule {data.get('id')!r}: unknown fields {sorted(unknown)}")
        missing = {"id", "category", "kind", "patterns"} - set(data)
        if missing:
            raise RuleError(f"rule {data.get('id')!r}: missing fields {sorted(missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "kind": str(self.kind),
            "patterns": list(self.patterns),
            "action": str(self.action),
            "description": self.description,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class RuleMatch:
    rule: Rule
    pattern: str  # the word or regex of the rule that matched
    matched: str  # the normalized text that matched
    span: tuple[int, int]  # in the original text
    original: str  # the original text at `span`


@dataclass(frozen=True)
class RuleScan:
    matches: tuple[RuleMatch, ...]
    suppressed: tuple[RuleMatch, ...]  # inside an allow-listed phrase
    allowed_spans: tuple[tuple[int, int], ...]  # allow-listed phrases, in the original


@dataclass(frozen=True)
class _Word:
    rule: Rule
    pattern: str
    regex: re.Pattern[str]  # the word alone, to tell which one a trie match was


@dataclass
class _Trie:
    children: dict[str, _Trie] = field(default_factory=dict)
    end: bool = False


_WORD_CHARS = r"[^\W_]"
_NOT_WORD = r"[\W_]"
_BOUNDED = f"(?<!{_WORD_CHARS})(?:{{}})(?!{_WORD_CHARS})"


class RuleSet:
    """Rules and an allow-list, compiled once; immutable, so a filter can swap it whole."""

    def __init__(self, rules: Iterable[Rule] = (), allow: Iterable[str] = ()) -> None:
        self.rules = tuple(rule for rule in rules if rule.enabled)
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise RuleError(f"duplicate rule ids: {duplicates}")
        self.allow = tuple(phrase.strip() for phrase in allow if phrase.strip())
        self._words: list[_Word] = []
        self._regexes: list[tuple[Rule, str, re.Pattern[str]]] = []
        trie = _Trie()
        cores = _Trie()  # the words without wildcards, for spaced runs
        for rule in self.rules:
            for pattern in rule.patterns:
                if rule.kind is RuleKind.WORDS:
                    units = _word_units(pattern, rule.id)
                    _add(trie, units)
                    core = _word_units(pattern, rule.id, wildcards=False)
                    _add(cores, core)
                    regex = re.compile("".join(units) + "|" + "".join(core))
                    self._words.append(_Word(rule, pattern, regex))
                else:
                    try:
                        compiled = re.compile(pattern, _case_flag(pattern))
                    except re.error as exc:
                        raise RuleError(
                            f"rule {rule.id!r}: bad regular expression {pattern!r}: {exc}"
                        ) from exc
                    self._regexes.append((rule, pattern, compiled))
        body = _trie_regex(trie)
        self._bounded = re.compile(_BOUNDED.format(body)) if body else None
        self._unbounded = re.compile(_trie_regex(cores)) if body else None
        allow_trie = _Trie()
        for phrase in self.allow:
            _add(allow_trie, _word_units(phrase, f"allow-list entry {phrase!r}"))
        allow_body = _trie_regex(allow_trie)
        self._allow = re.compile(_BOUNDED.format(allow_body)) if allow_body else None

    def scan(self, text: NormalizedText) -> RuleScan:
        allowed = self.allowed_spans(text)
        found: list[RuleMatch] = []
        suppressed: list[RuleMatch] = []
        seen: set[tuple[str, tuple[int, int]]] = set()
        for match in self._find(text):
            key = (match.rule.id, match.span)
            if key in seen:
                continue
            seen.add(key)
            inside = any(a <= match.span[0] and match.span[1] <= b for a, b in allowed)
            (suppressed if inside else found).append(match)
        return RuleScan(tuple(found), tuple(suppressed), allowed)

    def allowed_spans(self, text: NormalizedText) -> tuple[tuple[int, int], ...]:
        if self._allow is None:
            return ()
        return tuple(text.original_span(*m.span()) for m in self._allow.finditer(text.text))

    def _find(self, text: NormalizedText) -> Iterator[RuleMatch]:
        readings = (text.text, *text.readings)  # all as long as text.text: same offsets
        if self._bounded is not None and self._unbounded is not None:
            for reading in readings:
                for match in self._bounded.finditer(reading):
                    yield self._word_match(text, match.group(), match.start())
                for start, end in text.spaced_runs:
                    for match in self._unbounded.finditer(reading, start, end):
                        if _run_edge_or_long(match, start, end):
                            yield self._word_match(text, match.group(), match.start())
        # Regexes read the main text and the folded one, not the other readings: those
        # serve word lists (a regex can spell its own alternatives) and cost a pass each.
        for rule, pattern, regex in self._regexes:
            for match in regex.finditer(text.text):
                yield self._match(text, rule, pattern, match, folded=False)
            if text.folded != text.text:
                for match in regex.finditer(text.folded):
                    yield self._match(text, rule, pattern, match, folded=True)

    def _word_match(self, text: NormalizedText, matched: str, start: int) -> RuleMatch:
        word = next(w for w in self._words if w.regex.fullmatch(matched))
        span = text.original_span(start, start + len(matched))
        return RuleMatch(word.rule, word.pattern, matched, span, text.original[span[0] : span[1]])

    @staticmethod
    def _match(
        text: NormalizedText, rule: Rule, pattern: str, match: re.Match[str], *, folded: bool
    ) -> RuleMatch:
        span = text.original_span(match.start(), match.end(), folded=folded)
        return RuleMatch(rule, pattern, match.group(), span, text.original[span[0] : span[1]])


def _case_flag(pattern: str) -> int:
    """IGNORECASE only for a pattern that spells a capital letter: the texts it reads are
    lowercase already, and the flag makes Python's re several times slower."""
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char != char.lower():
            return re.IGNORECASE
    return 0


# Inside a spaced run a word is looked for without word boundaries only where the
# spacing can have hidden one: at either end of the run ("a b i t c h" = "a" + "bitch"),
# or when it is long enough not to be part of an ordinary word ("p a s s w o r d").
_RUN_MIDDLE_MIN = 5


def _run_edge_or_long(match: re.Match[str], start: int, end: int) -> bool:
    return match.start() == start or match.end() == end or len(match.group()) >= _RUN_MIDDLE_MIN


def _word_units(pattern: str, owner: str, *, wildcards: bool = True) -> list[str]:
    """A word pattern as regex pieces, one per run of a letter (see the module docstring).

    Runs are matched possessively ("s{2,}+" for "ss"): a letter repeated many times cannot
    make the expression backtrack, which keeps a check linear in the length of the text.
    Without `wildcards`, a leading or trailing "*" is left out (for searching inside
    spaced runs, where the core word alone is looked for).
    """
    stripped = pattern.strip()
    prefix = stripped.startswith("*")
    suffix = stripped.endswith("*")
    core = stripped.strip("*").strip()
    if not core or "*" in core:
        raise RuleError(f"{owner}: {pattern!r} may use '*' only at its start or end")
    core = normalize(core).text  # as the text it is matched against ("sh1t" is "shit")
    if not re.search(_WORD_CHARS, core):
        raise RuleError(f"{owner}: {pattern!r} has no letters or digits")
    units: list[str] = [f"{_WORD_CHARS}*"] if prefix and wildcards else []
    for key, run in itertools.groupby(core, key=_letter_class):
        count = len(list(run))
        if key == " ":
            units.append(f"{_NOT_WORD}*+")
        elif len(key) > 1 or key.isalnum():  # a letter or a digit, maybe repeated
            atom = key if len(key) > 1 else re.escape(key)
            units.append(f"{atom}++" if count == 1 else f"{atom}{{{count},}}+")
        else:  # punctuation in a word ("you're") may be left out
            units.extend([re.escape(key) + "?"] * count)
    if suffix and wildcards:
        units.append(f"{_WORD_CHARS}*+")
    return units


def _letter_class(char: str) -> str:
    """What a character of a word pattern matches: "i" and "l" each other, since
    leetspeak "1" and "|" stand for both; any whitespace a run of non-word characters."""
    if char in "il":
        return "[il]"
    return " " if char.isspace() else char


def _add(trie: _Trie, units: list[str]) -> None:
    node = trie
    for unit in units:
        node = node.children.setdefault(unit, _Trie())
    node.end = True


def _trie_regex(node: _Trie) -> str:
    branches = [unit + _trie_regex(child) for unit, child in sorted(node.children.items())]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if node.end else body


DEFAULT_RULES_FILE = "default_rules.json"


def default_rule_data() -> dict[str, Any]:
    """The shipped defaults as plain JSON data ({"rules": [...], "allow": [...]}), for the
    web app to seed its database with."""
    text = resources.files("generation.safety").joinpath(DEFAULT_RULES_FILE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def load_default_rules() -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """The shipped default rules and allow-list."""
    data = default_rule_data()
    rules = tuple(Rule.from_dict(item) for item in data["rules"])
    return rules, tuple(data.get("allow", ()))
