# ruff: noqa: RUF001, RUF003 - look-alike letters are this module's subject
"""Undo the usual tricks that hide a word from a filter, keeping a map back to the original.

`normalize(text)` applies, in order:

1. per character: invisible characters (zero-width, format, control, variation selectors,
   fillers) removed; Unicode compatibility decomposition (NFKD, so fullwidth, mathematical
   and circled letters become plain ones); accents and other combining marks dropped;
   look-alike letters from other scripts (Cyrillic, Greek, small capitals, enclosed
   letters) mapped to ASCII; case folded. This is `NormalizedText.folded`.
2. letters spaced out with one repeated separator ("s p a c e d", "s.p.a.c.e.d",
   "s-p-a-c-e-d", three letters or more) joined up.
3. leetspeak inside words that have at least one letter ("h4te", "$h!t", "1d10t")
   mapped to letters; numbers on their own ("5 apples", "$100") and numbers with a unit
   ("7am", "2nd") are left alone.

Where a text can be read more than one way, the other readings come along: "1" and "|"
as "l" as well as "i", words written in leetspeak alone ("7175"), and "a s t u p i d"
as "a stupid" as well as "astupid".

Every character of the result knows which character of the original it came from, so a
match can be shown where the user wrote it. Decomposition is used rather than NFKC
because the marks it separates are dropped anyway (only matching reads this text).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Letters that look like ASCII ones. Both cases are listed where they look different, as
# casefolding an uppercase look-alike may give a letter that no longer looks the same
# (Greek capital eta "Η" reads as "h", its small form "η" as "n").
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y",
    "ш": "w", "ь": "b", "ъ": "b", "з": "3", "ч": "4", "д": "d", "г": "r", "л": "n",
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p",
    "С": "c", "Т": "t", "Х": "x", "У": "y", "І": "i", "Ј": "j", "Ѕ": "s", "Ԁ": "d",
    "Ԍ": "g", "Ԛ": "q", "Ԝ": "w", "Ӏ": "l", "Ү": "y", "Һ": "h", "З": "3", "Ч": "4",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "θ": "o",
    "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o", "π": "n", "ρ": "p", "σ": "o",
    "ς": "c", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
    "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g",
    # Latin letters without a decomposition, and small capitals
    "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ŧ": "t", "ƒ": "f",
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ʀ": "r", "ᴀ": "a", "ʙ": "b",
    "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "×": "x",
    # Typographic apostrophes, so that "you’re" reads like "you're"
    "\u2018": "'", "\u2019": "'", "\u02bc": "'",
}  # fmt: skip

# Enclosed letters with no compatibility decomposition: first code point of each A..Z run.
_LETTER_RUNS = (
    0x1F150,  # negative circled capitals
    0x1F170,  # negative squared capitals
    0x1F1E6,  # regional indicator symbols
    0x249C,  # parenthesized small letters (they decompose to "(a)")
)

# Characters that render as nothing (or as a blank) but are not spaces.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Mn", "Me"})
_INVISIBLE_FORMAT = frozenset({"Cf", "Cc"})  # invisible whatever they follow
_KEEP_CONTROLS = frozenset("\t\n\r")
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# Leetspeak. Symbols that are ordinary punctuation at the end of a word ("wow!", "C++")
# count only when a letter or digit follows them in the same word.
_LEET = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "€": "e", "¢": "c", "!": "i", "|": "l", "+": "t",
}  # fmt: skip
_LEET_INNER_ONLY = frozenset("!|+")
# "1" and "|" stand for both "i" and "l": the other reading is offered as an alternative.
_LEET_OTHER_READING = {"1": "l", "|": "i"}
_LEET_OTHER = {**_LEET, **_LEET_OTHER_READING}
_LEET_CHARS = re.compile(r"[0-9@$€¢!|+]")
_LEET_SYMBOLS = frozenset("@$€¢!|+")
# A number with a unit or an ordinal ("7am", "2nd", "10km", "3d") is not leetspeak.
_NUMBER_WITH_UNIT = re.compile(
    r"\d*1st|\d*2nd|\d*3rd|\d+(?:th|am|pm|[kmgtb]|km|kg|mg|ml|l|[kmgt]b|[kmg]?hz|px|pt|r?em|d|s|h|ms"
    r"|min|x|fps|mph|kph|lbs?|oz|ft|cm|mm|in|yrs?|k?wh?|mah|p|c|f|v|bn)"
)

# A run of three or more single letters joined by one repeated separator. Units may be
# leetspeak symbols ("5 h ! t"); the separator is captured so that it repeats exactly.
_UNIT = r"(?:[^\W_]|[@$€¢!|])"
_SPACED = re.compile(
    rf"(?<![^\W_@$€¢!|])({_UNIT})( +|[.\-_*·•/~,:+])(?:{_UNIT})(?:\2{_UNIT})+(?![^\W_@$€¢!|])"
)
# English words of one letter: "you are a s t u p i d" could be "astupid" or "a stupid".
_ONE_LETTER_WORDS = frozenset("ai")

# fold_char() results, by character and by code point (for str.translate); capped, so that
# texts made of ever new characters cannot grow them without end.
_CACHE: dict[str, str] = {}
_TABLE: dict[int, str] = {}
_TABLE_KNOWN: set[str] = set()
_CACHE_LIMIT = 20_000


@dataclass(frozen=True)
class NormalizedText:
    """A text as the filter reads it, and the way back to the original."""

    original: str
    text: str  # fully normalized: what rules and classifiers match
    offsets: Sequence[int]  # offsets[i]: index in `original` of text[i]
    folded: str  # step 1 only (no leetspeak, no joined letters): for digits, e-mails, URLs
    folded_offsets: Sequence[int]
    spaced_runs: tuple[tuple[int, int], ...] = ()  # spans of `text` that were spaced out
    # Other plausible readings of `text`, each as long as it (so `offsets` apply): "1" and
    # "|" read the other way ("1oser"), words written in digits only ("7175").
    readings: tuple[str, ...] = ()
    # Readings with a one-letter word split off a spaced run ("a stupid"), for classifiers.
    split_readings: tuple[str, ...] = ()

    def original_span(self, start: int, end: int, *, folded: bool = False) -> tuple[int, int]:
        """The span of `original` that text[start:end] (or folded[start:end]) came from."""
        offsets = self.folded_offsets if folded else self.offsets
        size = len(offsets)
        if not 0 <= start <= end <= size:
            raise ValueError(f"span {start}:{end} is outside the normalized text (0:{size})")
        if start == end:
            at = offsets[start] if start < size else len(self.original)
            return at, at
        last = offsets[end - 1] + 1
        # Take in what step 1 dropped right after the last character (its accents).
        while last < len(self.original) and not fold_char(self.original[last]):
            last += 1
        return offsets[start], last

    def original_text(self, start: int, end: int, *, folded: bool = False) -> str:
        begin, finish = self.original_span(start, end, folded=folded)
        return self.original[begin:finish]


def without_invisibles(text: str) -> str:
    """`text` with only the invisible characters taken out (zero-width, format, control,
    fillers): the raw text as a reader sees it, for classifiers."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        char
        for char in text
        if char in _KEEP_CONTROLS
        or not (char in _FILLERS or unicodedata.category(char) in _INVISIBLE_FORMAT)
    )


def normalize(text: str) -> NormalizedText:
    folded, folded_offsets = _fold(text)
    joined, offsets, runs, splits = _join_spaced_letters(folded, folded_offsets)
    normalized, readings = _unleet(joined)
    split_readings = (_insert_spaces(normalized, splits),) if splits else ()
    return NormalizedText(
        original=text,
        text=normalized,
        offsets=offsets,
        folded=folded,
        folded_offsets=folded_offsets,
        spaced_runs=runs,
        readings=readings,
        split_readings=split_readings,
    )


def fold_char(char: str) -> str:
    """Step 1 for one character: what it reads as, in lowercase ASCII where it can."""
    cached = _CACHE.get(char)
    if cached is None:
        cached = _fold_uncached(char)
        if len(_CACHE) < _CACHE_LIMIT:
            _CACHE[char] = cached
    return cached


def _fold_uncached(char: str) -> str:
    if char in _KEEP_CONTROLS:
        return char
    if char in _FILLERS:
        return ""
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return ""
    code = ord(char)
    for first in _LETTER_RUNS:
        if first <= code < first + 26:
            return chr(ord("a") + code - first)
    out = []
    for part in unicodedata.normalize("NFKD", _LOOKALIKES.get(char, char)):
        for piece in _LOOKALIKES.get(part, part).casefold():
            if unicodedata.category(piece) in _INVISIBLE_CATEGORIES:
                continue  # accents, and the dot that casefolding "İ" leaves
            out.append(_LOOKALIKES.get(piece, piece))
    return "".join(out)


def _fold(text: str) -> tuple[str, Sequence[int]]:
    if text.isascii() and text.isprintable():  # the common case: only the case changes
        return text.lower(), range(len(text))
    # Next most common: every character folds to exactly one (accents, other scripts,
    # look-alikes), so str.translate does it and the offsets stay the identity.
    chars = set(text)
    new = chars.difference(_TABLE_KNOWN)
    if len(_TABLE) + len(new) <= _CACHE_LIMIT:
        for char in new:
            _TABLE[ord(char)] = fold_char(char)
            _TABLE_KNOWN.add(char)
        if all(len(_TABLE[ord(char)]) == 1 for char in chars):
            return text.translate(_TABLE), range(len(text))
    pieces: list[str] = []
    offsets: list[int] = []
    for index, char in enumerate(text):
        folded = fold_char(char)
        if folded:
            pieces.append(folded)
            offsets.extend([index] * len(folded))
    return "".join(pieces), offsets


def _join_spaced_letters(
    text: str, offsets: Sequence[int]
) -> tuple[str, Sequence[int], tuple[tuple[int, int], ...], list[int]]:
    """Step 2. Returns the text, its offsets, the joined spans and, for runs that start
    with a one-letter word, where a space could go back in (see `_ONE_LETTER_WORDS`)."""
    matches = list(_SPACED.finditer(text))
    if not matches:
        return text, offsets, (), []
    pieces: list[str] = []
    new_offsets: list[int] = []
    runs: list[tuple[int, int]] = []
    splits: list[int] = []
    size = 0
    position = 0
    for match in matches:
        start, end = match.span()
        pieces.append(text[position:start])
        new_offsets.extend(offsets[position:start])
        size += start - position
        kept = range(start, end, 1 + len(match.group(2)))
        pieces.extend(text[i] for i in kept)
        new_offsets.extend(offsets[i] for i in kept)
        if text[start] in _ONE_LETTER_WORDS and match.group(2).isspace() and len(kept) > 3:
            splits.append(size + 1)
        runs.append((size, size + len(kept)))
        size += len(kept)
        position = end
    pieces.append(text[position:])
    new_offsets.extend(offsets[position:])
    return "".join(pieces), new_offsets, tuple(runs), splits


def _unleet(text: str) -> tuple[str, tuple[str, ...]]:
    """Step 3, one character for one so that offsets stay valid. Returns the text and its
    other readings (see `NormalizedText.readings`) where they differ from it."""
    words = _words_with_leet(text)
    if not words:
        return text, ()
    result = _map_words(text, words, _LEET, digits_only=False)
    readings = [
        _map_words(text, words, _LEET, digits_only=True),
        _map_words(text, words, _LEET_OTHER, digits_only=True),
    ]
    return result, tuple(r for r in dict.fromkeys(readings) if r != result)


def _words_with_leet(text: str) -> list[tuple[int, int]]:
    """Spans of the words that hold a leetspeak character: found from those characters,
    which are rare, rather than by reading every word."""
    spans: list[tuple[int, int]] = []
    for match in _LEET_CHARS.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue
        start, end = match.start(), match.end()
        while start > 0 and _in_word(text[start - 1]):
            start -= 1
        while end < len(text) and _in_word(text[end]):
            end += 1
        spans.append((start, end))
    return spans


def _in_word(char: str) -> bool:
    return char.isalnum() or char in _LEET_SYMBOLS


def _map_words(
    text: str, words: list[tuple[int, int]], table: dict[str, str], *, digits_only: bool
) -> str:
    pieces = []
    position = 0
    for start, end in words:
        pieces.append(text[position:start])
        pieces.append(_map_word(text[start:end], table, digits_only=digits_only))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _map_word(word: str, table: dict[str, str], *, digits_only: bool = False) -> str:
    """`word` with leetspeak read as letters, if it has a letter (or, with `digits_only`,
    if it is at least three characters of leetspeak alone)."""
    if word.isalpha() or _NUMBER_WITH_UNIT.fullmatch(word):
        return word
    if not any(char.isalpha() for char in word) and not (
        digits_only and len(word) >= 3 and all(char in table for char in word)
    ):
        return word
    out = []
    for i, char in enumerate(word):
        letter = table.get(char)
        if letter is None or (char in _LEET_INNER_ONLY and not _has_alnum(word, i + 1)):
            out.append(char)
        else:
            out.append(letter)
    return "".join(out)


def _has_alnum(token: str, start: int) -> bool:
    return any(c.isalnum() for c in token[start:])


def _insert_spaces(text: str, positions: list[int]) -> str:
    pieces = []
    previous = 0
    for position in positions:
        pieces.append(text[previous:position])
        previous = position
    pieces.append(text[previous:])
    return " ".join(pieces)
