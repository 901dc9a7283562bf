"""Translations from seq2seq models (Marian, M2M100, NLLB, T5) and chat models, streamed.

Languages are named by ISO 639-1 codes ("en", "de", ...) everywhere in Atelier; each model
family's own codes (NLLB's "deu_Latn", M2M100's "__de__" token, Marian's fixed pair or its
">>de<<" target tokens, T5's task prefixes) are derived here. The source language is
detected offline with lingua when the user does not name it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from generation.batching import open_stream
from generation.languages import (
    LANGUAGES,
    M2M_CODES,
    LanguageSupport,
    TranslatorFacts,
    UnsupportedLanguageError,
    language_name,
    support_from,
)
from generation.loading import LoadedModel
from generation.prompts import build_chat_input
from generation.specs import GenerationError, SamplingParams
from generation.streaming import StreamStats
from generation.summarize import chunk_text

_NAME_TO_CODE = {name.lower(): code for code, (name, _) in LANGUAGES.items()}
_LINGUA_NAMES = {"nb": "BOKMAL"}  # lingua's enum names are English names in capitals
MIN_DETECTION_CONFIDENCE = 0.3  # below this, lingua is guessing: ask the user instead


def normalize_language(value: str) -> str:
    """An ISO 639-1 code from a code or an English name ("de", "DE", "German")."""
    text = value.strip()
    if text.lower() in LANGUAGES:
        return text.lower()
    if text.lower() in _NAME_TO_CODE:
        return _NAME_TO_CODE[text.lower()]
    raise UnsupportedLanguageError(
        f"unknown language {value!r}; known: {', '.join(sorted(LANGUAGES))}"
    )


# -- detection ------------------------------------------------------------------------------

_detector: Any = None
_detector_lock = threading.Lock()


def _get_detector() -> Any:
    """Built once per process. Restricted to LANGUAGES, in lingua's low accuracy mode:
    ~50 MB and a fraction of a second to load, against ~600 MB and seconds for the high
    accuracy models of the same languages; it still tells sentences apart reliably."""
    global _detector
    with _detector_lock:
        if _detector is None:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            languages = [
                Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
                for code in LANGUAGES
            ]
            _detector = (
                LanguageDetectorBuilder.from_languages(*languages).with_low_accuracy_mode().build()
            )
        return _detector


def detect_language(text: str, among: Iterable[str] | None = None) -> str | None:
    """The ISO 639-1 code of the text's language, or None when it cannot be told (too
    short, no letters). `among` restricts the answer, e.g. to a model's source languages."""
    candidates = set(among) if among is not None else None
    values = _get_detector().compute_language_confidence_values(text)
    for value in values:  # best first
        code = value.language.iso_code_639_1.name.lower()
        if candidates is not None and code not in candidates:
            continue
        return code if value.value >= MIN_DETECTION_CONFIDENCE else None
    return None


# -- what a model supports ------------------------------------------------------------------


def facts_from_loaded(loaded: LoadedModel) -> TranslatorFacts:
    """What the loaded config and tokenizer say about the model's languages."""
    config = loaded.model.config
    tokenizer = loaded.tokenizer
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    special |= set(getattr(tokenizer, "extra_special_tokens", []) or [])
    lang_ids = getattr(tokenizer, "lang_code_to_id", None)
    marian_codes = getattr(tokenizer, "supported_language_codes", []) or []
    return TranslatorFacts(
        model_type=str(getattr(config, "model_type", "")),
        is_encoder_decoder=loaded.is_encoder_decoder,
        names=(loaded.spec.source, loaded.spec.name, str(getattr(config, "_name_or_path", ""))),
        task_prefixes=tuple(getattr(config, "task_specific_params", None) or {}),
        marian_pair=(
            getattr(tokenizer, "source_lang", None),
            getattr(tokenizer, "target_lang", None),
        ),
        marian_targets=tuple(code[2:-2] for code in marian_codes),
        m2m_codes=tuple(lang_ids) if isinstance(lang_ids, dict) else (),
        special_tokens=frozenset(s for s in special if isinstance(s, str)),
    )


def supported_languages(loaded: LoadedModel) -> LanguageSupport:
    """The languages a loaded model translates between (for the UI and for checks)."""
    return support_from(facts_from_loaded(loaded), loaded.spec.name)


def check_pair(loaded: LoadedModel, source: str, target: str) -> LanguageSupport:
    support = supported_languages(loaded)
    if source == target:
        raise UnsupportedLanguageError(
            f"the text is already in {language_name(target)} ({target}); choose another "
            "target language, or name the source language if it was detected wrongly"
        )
    if not support.allows(source, target):
        raise UnsupportedLanguageError(
            f"model {loaded.spec.name!r} cannot translate {source}→{target} "
            f"({language_name(source)} to {language_name(target)}); "
            f"it translates {support.describe()}"
        )
    return support


# -- translating ----------------------------------------------------------------------------

CHAT_SYSTEM_PROMPT = (
    "You are a translator. Translate the user's text faithfully, keeping its formatting, "
    "and reply with the translation only."
)
MAX_CHUNK_TOKENS = 400  # per call: translation models are trained on sentences, not pages
_encode_lock = threading.Lock()  # tokenizer.src_lang is state shared by every caller


class TranslationStream:
    """A translation of `text` into `target`, streamed like a chat reply.

    `source` is detected when not given; the pair is checked before anything runs, so
    an unsupported one fails at once with UnsupportedLanguageError. Lines are kept; a
    long line is cut into chunks at sentence boundaries and translated chunk by chunk,
    each one streaming. `params` gives the sampling and stop sequences (greedy by
    default); the length of each chunk's translation follows its input.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        text: str,
        *,
        target: str,
        source: str | None = None,
        params: SamplingParams | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        if not text.strip():
            raise GenerationError("there is no text to translate")
        self.loaded = loaded
        self.source_text = text
        self.target = normalize_language(target)
        self.detected = source is None
        if source is None:
            # Among all languages, not just the model's sources: text in a language the
            # model does not take should get the unsupported-pair error, not a wrong guess.
            found = detect_language(text)
            if found is None:
                raise GenerationError(
                    "could not detect the language of the text; please choose the source language"
                )
            source = found
        self.source = normalize_language(source)
        self.support = check_pair(loaded, self.source, self.target)
        self.params = params or SamplingParams(temperature=0.0)
        self.should_stop = should_stop
        self.stats = StreamStats(prompt_tokens=0)
        self.text = ""
        self.calls = 0

    # -- encoding per family ----------------------------------------------------------------

    def _chunk_tokens(self) -> int:
        if self.support.family == "chat":
            return min(MAX_CHUNK_TOKENS * 2, self.loaded.context_length // 3)
        return min(MAX_CHUNK_TOKENS, self.loaded.context_length - 16)

    def _hidden_ids(self) -> frozenset[int]:
        """M2M100's tokenizer does not mark its language tokens special, so decoding would
        show the forced target token ("__fr__") as text."""
        if self.support.family != "m2m100":
            return frozenset()
        return frozenset(self.loaded.tokenizer.lang_code_to_id.values())

    def _encode(self, text: str) -> tuple[list[int], dict[str, Any]]:
        """Encoder (or chat prompt) ids and extra generate() arguments for one chunk."""
        tokenizer = self.loaded.tokenizer
        family = self.support.family
        if family == "chat":
            message = (
                f"Translate this text from {language_name(self.source)} to "
                f"{language_name(self.target)}:\n\n{text}"
            )
            ids = build_chat_input(
                tokenizer,
                [{"role": "user", "content": message}],
                system=CHAT_SYSTEM_PROMPT,
                max_prompt_tokens=self.loaded.context_length // 2,
                model_name=self.loaded.spec.name,
            )
            return ids, {}
        if family == "marian":
            multi_target = len(self.support.targets) > 1
            prefixed = f">>{self.target}<< {text}" if multi_target else text
            return list(tokenizer(prefixed)["input_ids"]), {}
        if family == "t5":
            params = self.loaded.model.config.task_specific_params
            prefix = params[f"translation_{self.source}_to_{self.target}"].get("prefix", "")
            return list(tokenizer(prefix + text)["input_ids"]), {}
        if family == "m2m100":
            source = M2M_CODES.get(self.source, self.source)
            target = M2M_CODES.get(self.target, self.target)
            with _encode_lock:
                tokenizer.src_lang = source
                ids = list(tokenizer(text)["input_ids"])
            return ids, {"forced_bos_token_id": tokenizer.get_lang_id(target)}
        # NLLB
        source, target = LANGUAGES[self.source][1], LANGUAGES[self.target][1]
        with _encode_lock:
            tokenizer.src_lang = source
            ids = list(tokenizer(text)["input_ids"])
        return ids, {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(target)}

    # -- running ------------------------------------------------------------------------------

    def _translate_chunk(self, chunk: str, on_text: Callable[[str], None]) -> StreamStats:
        ids, extra = self._encode(chunk)
        chunk_tokens = len(ids)
        budget = min(2 * chunk_tokens + 16, self.loaded.context_length)
        if self.support.family == "chat":
            budget = min(budget, self.loaded.context_length - chunk_tokens)
        params = replace(self.params, max_new_tokens=max(1, budget))
        stream = open_stream(
            self.loaded,
            ids,
            params,
            should_stop=self.should_stop,
            generate_kwargs=extra,
            hidden_token_ids=self._hidden_ids(),
        )
        self.calls += 1
        stats = stream.run(on_text)
        self.stats.prompt_tokens += stats.prompt_tokens
        self.stats.completion_tokens += stats.completion_tokens
        return stats

    def run(self, on_text: Callable[[str], None]) -> StreamStats:
        """Translate, calling `on_text` with each new piece of text."""
        started = time.perf_counter()
        pieces: list[str] = []

        def emit(piece: str) -> None:
            if not piece:
                return
            if self.stats.first_token_seconds is None:
                self.stats.first_token_seconds = time.perf_counter() - started
            pieces.append(piece)
            on_text(piece)

        reasons: list[str] = []
        chunk_tokens = self._chunk_tokens()
        try:
            for number, line in enumerate(self.source_text.split("\n")):
                if number:
                    emit("\n")
                for index, chunk in enumerate(
                    chunk_text(line, self.loaded.tokenizer, chunk_tokens)
                ):
                    if index:
                        emit(" ")
                    reason = self._translate_chunk(chunk, emit).finish_reason
                    reasons.append(reason)
                    if reason in ("stopped", "stop_sequence"):
                        self.stats.finish_reason = reason
                        return self.stats
            self.stats.finish_reason = "length" if "length" in reasons else "eos"
        finally:
            self.text = "".join(pieces)
            self.stats.total_seconds = time.perf_counter() - started
        return self.stats

    def __call__(self) -> str:
        """The whole translation at once (for scripts and tests)."""
        self.run(lambda piece: None)
        return self.text
