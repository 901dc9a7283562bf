"""The languages Atelier names (ISO 639-1 codes), and what a translation model offers, told
from what its config and tokenizer say: the worker reads that from the loaded model
(`generation.translate`), the web process from the model's files with plain JSON
(`facts_from_folder`), both through `support_from`. No torch or transformers here.

Each family keeps its languages its own way: Marian a fixed pair in its tokenizer config and
">>de<<" target tokens in its vocabulary, M2M100 a named set of "__de__" tokens, NLLB
FLORES-200 codes ("deu_Latn") among its special tokens, T5 translation task prefixes in
its config; a chat model takes every language.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generation.specs import GenerationError

# code: (English name, NLLB/FLORES-200 code). The languages Atelier detects and offers;
# M2M100 uses the ISO codes themselves (Norwegian Bokmål as "no").
LANGUAGES: dict[str, tuple[str, str]] = {
    "ar": ("Arabic", "arb_Arab"),
    "bg": ("Bulgarian", "bul_Cyrl"),
    "ca": ("Catalan", "cat_Latn"),
    "cs": ("Czech", "ces_Latn"),
    "da": ("Danish", "dan_Latn"),
    "de": ("German", "deu_Latn"),
    "el": ("Greek", "ell_Grek"),
    "en": ("English", "eng_Latn"),
    "es": ("Spanish", "spa_Latn"),
    "fa": ("Persian", "pes_Arab"),
    "fi": ("Finnish", "fin_Latn"),
    "fr": ("French", "fra_Latn"),
    "he": ("Hebrew", "heb_Hebr"),
    "hi": ("Hindi", "hin_Deva"),
    "hu": ("Hungarian", "hun_Latn"),
    "id": ("Indonesian", "ind_Latn"),
    "it": ("Italian", "ita_Latn"),
    "ja": ("Japanese", "jpn_Jpan"),
    "ko": ("Korean", "kor_Hang"),
    "nb": ("Norwegian Bokmål", "nob_Latn"),
    "nl": ("Dutch", "nld_Latn"),
    "pl": ("Polish", "pol_Latn"),
    "pt": ("Portuguese", "por_Latn"),
    "ro": ("Romanian", "ron_Latn"),
    "ru": ("Russian", "rus_Cyrl"),
    "sv": ("Swedish", "swe_Latn"),
    "tr": ("Turkish", "tur_Latn"),
    "uk": ("Ukrainian", "ukr_Cyrl"),
    "vi": ("Vietnamese", "vie_Latn"),
    "zh": ("Chinese", "zho_Hans"),
}
M2M_CODES = {"nb": "no"}  # where M2M100's code differs from ours
# M2M100 tokenizers name their language set in their config; "m2m100" (100 languages)
# holds all of ours, "wmt21" eight. A tokenizer loaded by the worker lists the codes.
M2M_LANGUAGE_SETS: dict[str, tuple[str, ...]] = {
    "m2m100": tuple(M2M_CODES.get(code, code) for code in LANGUAGES),
    "wmt21": ("en", "ha", "is", "ja", "cs", "ru", "zh", "de"),
}
_MARIAN_NAME = re.compile(r"opus-mt-(?:tc-big-)?([a-z]{2,3})-([a-z]{2,3})(?![a-z])", re.IGNORECASE)
_MARIAN_CODE = re.compile(r"^>>(.+)<<$")
_T5_TASK = re.compile(r"^translation_([a-z]{2})_to_([a-z]{2})$")


class UnsupportedLanguageError(GenerationError):
    """The model cannot translate between the requested languages; the message names
    what it does support."""


def language_name(code: str) -> str:
    return LANGUAGES[code][0] if code in LANGUAGES else code


@dataclass(frozen=True)
class LanguageSupport:
    """What a model translates. `pairs` is set for models with fixed directions (Marian,
    T5); otherwise any source to any target, different languages, is allowed. `sources`
    is None for a multi-source model whose sources cannot be listed (e.g. opus-mt-mul-en).
    """

    family: str  # "marian", "m2m100", "nllb", "t5" or "chat"
    sources: tuple[str, ...] | None
    targets: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...] | None = None

    def allows(self, source: str, target: str) -> bool:
        if self.pairs is not None:
            return (source, target) in self.pairs
        source_ok = self.sources is None or source in self.sources
        return source_ok and target in self.targets and source != target

    def describe(self) -> str:
        if self.pairs is not None:
            return ", ".join(f"{s}→{t}" for s, t in self.pairs)
        sources = "any language" if self.sources is None else ", ".join(self.sources)
        return f"from {sources} into {', '.join(self.targets)}"


@dataclass(frozen=True)
class TranslatorFacts:
    """What a model's config and tokenizer say about its languages."""

    model_type: str
    is_encoder_decoder: bool
    names: tuple[str, ...] = ()  # its source, catalog name, config name (for opus-mt-xx-yy)
    task_prefixes: tuple[str, ...] = ()  # the config's task_specific_params keys (T5)
    marian_pair: tuple[str | None, str | None] = (None, None)  # the tokenizer's languages
    marian_targets: tuple[str, ...] = ()  # the codes of its ">>xx<<" tokens
    m2m_codes: tuple[str, ...] = ()  # an M2M100 tokenizer's language codes
    special_tokens: frozenset[str] = frozenset()


def support_from(facts: TranslatorFacts, model_name: str) -> LanguageSupport:
    """The languages a model with these facts translates between."""
    if not facts.is_encoder_decoder:
        codes = tuple(LANGUAGES)
        return LanguageSupport("chat", codes, codes)
    if facts.model_type == "marian":
        return _marian_support(facts, model_name)
    if facts.model_type in ("m2m_100", "nllb-moe"):
        return _m2m_support(facts, model_name)
    pairs = tuple((m.group(1), m.group(2)) for k in facts.task_prefixes if (m := _T5_TASK.match(k)))
    if not pairs:
        raise UnsupportedLanguageError(
            f"model {model_name!r} ({facts.model_type}) is not a translation model Atelier "
            "knows: use Marian, M2M100, NLLB, T5 or a chat model"
        )
    sources = tuple(sorted({s for s, _ in pairs}))
    return LanguageSupport("t5", sources, tuple(sorted({t for _, t in pairs})), pairs)


def _marian_support(facts: TranslatorFacts, model_name: str) -> LanguageSupport:
    source, target = facts.marian_pair
    if not (source and target):
        for name in facts.names:
            if match := _MARIAN_NAME.search(name):
                source, target = match.group(1).lower(), match.group(2).lower()
                break
    if not (source and target):
        raise UnsupportedLanguageError(
            f"model {model_name!r}: cannot tell which languages this Marian model "
            "translates (no source_lang/target_lang in its tokenizer, no opus-mt-xx-yy name)"
        )
    codes = facts.marian_targets
    targets = tuple(sorted({c for c in codes if c in LANGUAGES})) if codes else (target,)
    if source in LANGUAGES:
        return LanguageSupport("marian", (source,), targets, tuple((source, t) for t in targets))
    return LanguageSupport("marian", None, targets)  # a group source such as "mul"


def _m2m_support(facts: TranslatorFacts, model_name: str) -> LanguageSupport:
    if facts.m2m_codes:  # M2M100: ISO codes
        known = tuple(c for c in LANGUAGES if M2M_CODES.get(c, c) in facts.m2m_codes)
        return LanguageSupport("m2m100", known, known)
    nllb = tuple(c for c, (_, flores) in LANGUAGES.items() if flores in facts.special_tokens)
    if nllb:
        return LanguageSupport("nllb", nllb, nllb)
    raise UnsupportedLanguageError(f"model {model_name!r}: its tokenizer names no language codes")


def facts_from_folder(folder: Path, names: tuple[str, ...] = ()) -> TranslatorFacts:
    """The facts of a model folder, read from its config.json and tokenizer files alone
    (no weights, no transformers). OSError or ValueError when they cannot be read."""
    config = _json(folder / "config.json")
    tokenizer = _json(folder / "tokenizer_config.json", missing_ok=True)
    model_type = str(config.get("model_type", ""))
    special = set(_strings(tokenizer.get("extra_special_tokens")))
    special |= set(_strings(tokenizer.get("additional_special_tokens")))
    special |= set(_strings((tokenizer.get("added_tokens_decoder") or {}).values()))
    fast = _json(folder / "tokenizer.json", missing_ok=True)
    special |= set(_strings(fast.get("added_tokens")))
    # Older saves keep the special tokens apart (hub folders of NLLB and M2M100 do).
    special_map = _json(folder / "special_tokens_map.json", missing_ok=True)
    special |= set(_strings(special_map.get("additional_special_tokens")))
    special |= set(_json(folder / "added_tokens.json", missing_ok=True))
    m2m_codes: tuple[str, ...] = ()
    marian_targets: tuple[str, ...] = ()
    if model_type == "marian":
        vocab = _json(folder / "vocab.json", missing_ok=True)
        marian_targets = tuple(m.group(1) for k in vocab if (m := _MARIAN_CODE.match(k)))
    elif "language_codes" in tokenizer or _is_m2m_tokenizer(tokenizer):
        # M2M100Tokenizer's set defaults to "m2m100" when its config does not name one.
        language_set = str(tokenizer.get("language_codes") or "m2m100")
        m2m_codes = M2M_LANGUAGE_SETS.get(language_set, ())
    return TranslatorFacts(
        model_type=model_type,
        is_encoder_decoder=bool(config.get("is_encoder_decoder", False)),
        names=(*names, str(config.get("_name_or_path", ""))),
        task_prefixes=tuple(config.get("task_specific_params") or {}),
        marian_pair=(tokenizer.get("source_lang"), tokenizer.get("target_lang")),
        marian_targets=marian_targets,
        m2m_codes=m2m_codes,
        special_tokens=frozenset(special),
    )


def _json(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _is_m2m_tokenizer(tokenizer: dict[str, Any]) -> bool:
    return str(tokenizer.get("tokenizer_class", "")).startswith("M2M100Tokenizer")


def _strings(values: Any) -> list[str]:
    """The token strings of a list of tokens (or of a name -> token map), each a string
    or an {"content": ...} object."""
    if isinstance(values, dict):
        values = values.values()
    tokens = [v.get("content") if isinstance(v, dict) else v for v in values or ()]
    return [t for t in tokens if isinstance(t, str)]
