"""Characters to ids and back, with one id for every character the training text lacked."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

UNKNOWN = "<unk>"
VOCAB_FORMAT = 1
# NUL is never meaningful text and databases such as PostgreSQL refuse to store it, so it is
# never given an id of its own (it reads as unknown, which generation never produces).
_NEVER = frozenset({"\x00"})


class CharVocab:
    """Id 0 is the unknown token; ids 1.. are single characters, most frequent first.

    Characters that are not in the vocabulary (in a prompt, or in held-out text) encode as
    the unknown id and decode to nothing; generation never samples it.
    """

    unknown_id = 0

    def __init__(self, chars: list[str]) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be unique")
        if any(len(char) != 1 or char in _NEVER for char in chars):
            raise ValueError("vocabulary entries must be single characters other than NUL")
        self.chars = list(chars)
        self._ids = {char: i + 1 for i, char in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    @classmethod
    def build(cls, text: str, min_count: int = 1) -> CharVocab:
        """The characters of `text` seen at least `min_count` times, most frequent first
        (ties in code point order, so the same text always gives the same ids)."""
        counts = Counter(text)
        kept = [c for c, n in counts.items() if n >= min_count and c not in _NEVER]
        return cls(sorted(kept, key=lambda c: (-counts[c], ord(c))))

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(char, self.unknown_id) for char in text]

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        return "".join(chars[i - 1] for i in ids if 0 < i <= len(chars))

    def to_json(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "unknown": UNKNOWN, "chars": self.chars}

    @classmethod
    def from_json(cls, data: Any) -> CharVocab:
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not an Atelier character vocabulary (format {VOCAB_FORMAT})")
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise ValueError("'chars' must be a list of strings")
        return cls(chars)

    def save(self, path: Path) -> None:
        # ensure_ascii keeps every character, including unpaired surrogates, readable back.
        path.write_text(json.dumps(self.to_json(), ensure_ascii=True), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CharVocab:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
