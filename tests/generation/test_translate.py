"""Translation: offline language detection, language support per model family, the
unsupported-pair error, forced BOS language tokens, prefixes, streaming and chat models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from generation.languages import LANGUAGES, UnsupportedLanguageError, language_name
from generation.loading import LoadedModel, load_seq2seq_lm
from generation.specs import GenerationError, ModelSpec, SamplingParams, Task
from generation.translate import (
    TranslationStream,
    detect_language,
    normalize_language,
    supported_languages,
)
from tests.generation.test_summarize import counting_generate
from tests.tiny.models import (
    build_tiny_m2m100,
    build_tiny_marian,
    build_tiny_nllb,
    build_tiny_t5,
)

SENTENCES = {
    "en": "The weather is lovely today, so we are taking the children to the park.",
    "de": "Das Wetter ist heute schön, deshalb gehen wir mit den Kindern in den Park.",
    "fr": "Il fait beau aujourd'hui, alors nous emmenons les enfants au parc.",
    "es": "Hoy hace buen tiempo, así que llevamos a los niños al parque.",
    "it": "Oggi il tempo è bello, quindi portiamo i bambini al parco.",
    "pt": "O tempo está ótimo hoje, por isso vamos levar as crianças ao parque.",
    "nl": "Het weer is vandaag heerlijk, dus we gaan met de kinderen naar het park.",
    "pl": "Dzisiaj jest piękna pogoda, więc zabieramy dzieci do parku.",
    "ru": "Сегодня прекрасная погода, поэтому мы ведём детей в парк.",
    "ja": "今日はとても良い天気なので、子供たちを公園に連れて行きます。",
}


def load(folder: Path, name: str) -> LoadedModel:
    return load_seq2seq_lm(ModelSpec(name=name, source=str(folder), task=Task.TRANSLATE))


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = build_tiny_marian(tmp_path_factory.mktemp("tr") / "opus-mt-en-de")
    return load(folder, "opus-mt-en-de")


@pytest.fixture(scope="module")
def marian_multi(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = build_tiny_marian(
        tmp_path_factory.mktemp("tr") / "opus-mt-en-ROMANCE",
        target_lang="ROMANCE",
        target_codes=("fr", "es", "it", "pt"),
    )
    return load(folder, "opus-mt-en-ROMANCE")


@pytest.fixture(scope="module")
def nllb(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(build_tiny_nllb(tmp_path_factory.mktemp("tr-nllb")), "tiny-nllb")


@pytest.fixture(scope="module")
def m2m100(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(build_tiny_m2m100(tmp_path_factory.mktemp("tr-m2m")), "tiny-m2m100")


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(build_tiny_t5(tmp_path_factory.mktemp("tr-t5")), "tiny-t5")


def regenerate(loaded: LoadedModel, call: dict[str, Any]) -> torch.Tensor:
    """What plain greedy generate() makes of a recorded call's inputs."""
    with torch.inference_mode():
        return loaded.model.generate(
            input_ids=call["input_ids"],
            forced_bos_token_id=call["forced_bos_token_id"],
            max_new_tokens=call["max_new_tokens"],
            do_sample=False,
            num_beams=1,
        )[0]


def tokens(loaded: LoadedModel, ids: torch.Tensor) -> list[str]:
    return list(loaded.tokenizer.convert_ids_to_tokens(ids.tolist()))


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "sentence"), sorted(SENTENCES.items()))
def test_detects_the_language_of_real_sentences(code: str, sentence: str) -> None:
    assert detect_language(sentence) == code


def test_detection_gives_up_on_text_without_language() -> None:
    assert detect_language("12345 67 89") is None
    assert detect_language("") is None


def test_detection_can_be_restricted_to_some_languages() -> None:
    assert detect_language(SENTENCES["es"], among=["en", "es"]) == "es"
    # Asked to choose among languages it clearly is not, lingua has no confidence left.
    assert detect_language(SENTENCES["ja"], among=["en", "de"]) is None


def test_language_names_and_codes() -> None:
    assert normalize_language("German") == "de"
    assert normalize_language(" DE ") == "de"
    assert language_name("fr") == "French"
    with pytest.raises(UnsupportedLanguageError, match="unknown language 'Klingon'"):
        normalize_language("Klingon")


# -- what each family supports -----------------------------------------------------------------


def test_marian_pair_comes_from_the_model(marian: LoadedModel) -> None:
    support = supported_languages(marian)
    assert support.family == "marian"
    assert support.pairs == (("en", "de"),)
    assert support.allows("en", "de")
    assert not support.allows("de", "en")


def test_marian_pair_from_the_name_when_the_tokenizer_does_not_say(marian: LoadedModel) -> None:
    tokenizer = marian.tokenizer
    saved = tokenizer.source_lang, tokenizer.target_lang
    tokenizer.source_lang = tokenizer.target_lang = None
    try:
        assert supported_languages(marian).pairs == (("en", "de"),)  # from "opus-mt-en-de"
    finally:
        tokenizer.source_lang, tokenizer.target_lang = saved


def test_multi_target_marian_lists_its_target_tokens(marian_multi: LoadedModel) -> None:
    support = supported_languages(marian_multi)
    assert support.targets == ("es", "fr", "it", "pt")
    assert support.pairs == tuple(("en", t) for t in ("es", "fr", "it", "pt"))


def test_nllb_languages_come_from_its_tokenizer(nllb: LoadedModel) -> None:
    support = supported_languages(nllb)
    assert support.family == "nllb"
    assert support.pairs is None
    assert set(support.targets) == set(LANGUAGES)
    assert support.allows("de", "fr") and not support.allows("fr", "fr")


def test_m2m100_languages_come_from_its_tokenizer(m2m100: LoadedModel) -> None:
    support = supported_languages(m2m100)
    assert support.family == "m2m100"
    assert set(support.targets) == set(LANGUAGES)  # "nb" is M2M100's "no"


def test_t5_pairs_come_from_its_task_prefixes(t5: LoadedModel) -> None:
    support = supported_languages(t5)
    assert support.family == "t5"
    assert support.pairs == (("en", "de"), ("en", "fr"))


def test_chat_models_translate_between_all_known_languages(llama: LoadedModel) -> None:
    support = supported_languages(llama)
    assert support.family == "chat"
    assert support.allows("ja", "pl")


# -- the unsupported pair error ----------------------------------------------------------------


def test_unsupported_pair_names_the_supported_pairs(marian: LoadedModel) -> None:
    with pytest.raises(UnsupportedLanguageError) as caught:
        TranslationStream(marian, SENTENCES["fr"], target="de")  # detected: French
    message = str(caught.value)
    assert "'opus-mt-en-de' cannot translate fr→de (French to German)" in message
    assert "it translates en→de" in message
    assert isinstance(caught.value, GenerationError)


def test_unsupported_target_of_a_multi_target_model(marian_multi: LoadedModel) -> None:
    with pytest.raises(UnsupportedLanguageError, match="en→es, en→fr, en→it, en→pt"):
        TranslationStream(marian_multi, SENTENCES["en"], target="de")


def test_translating_into_the_source_language_is_refused(nllb: LoadedModel) -> None:
    with pytest.raises(UnsupportedLanguageError, match="already in German"):
        TranslationStream(nllb, SENTENCES["de"], target="de")


def test_undetectable_source_asks_the_user(nllb: LoadedModel) -> None:
    with pytest.raises(GenerationError, match="choose the source language"):
        TranslationStream(nllb, "12345", target="fr")
    with pytest.raises(GenerationError, match="no text"):
        TranslationStream(nllb, "  \n ", target="fr")


# -- encoding per family -----------------------------------------------------------------------


def test_detected_source_and_forced_target_token_for_nllb(nllb: LoadedModel) -> None:
    with counting_generate(nllb) as calls:
        translation = TranslationStream(nllb, SENTENCES["de"], target="fr")
        translation()
    assert (translation.source, translation.detected) == ("de", True)
    call = calls[0]
    # tokenizer.src_lang put the source language token first; the target is forced.
    assert tokens(nllb, call["input_ids"][0])[0] == "deu_Latn"
    assert tokens(nllb, call["input_ids"][0])[-1] == "</s>"
    assert call["forced_bos_token_id"] == nllb.tokenizer.convert_tokens_to_ids("fra_Latn")


def test_forced_bos_is_the_first_generated_token_and_the_stream_matches(
    nllb: LoadedModel,
) -> None:
    translation = TranslationStream(
        nllb, SENTENCES["en"], target="ja", params=SamplingParams(temperature=0)
    )
    pieces: list[str] = []
    with counting_generate(nllb) as calls:
        translation.run(pieces.append)
    output = regenerate(nllb, calls[0])
    assert tokens(nllb, output[:2]) == ["</s>", "jpn_Jpan"]  # decoder start, forced target
    assert "".join(pieces) == nllb.tokenizer.decode(output, skip_special_tokens=True)


def test_m2m100_source_token_forced_target_and_no_language_tokens_in_the_text(
    m2m100: LoadedModel,
) -> None:
    tokenizer = m2m100.tokenizer
    translation = TranslationStream(
        m2m100, SENTENCES["de"], target="nb", params=SamplingParams(temperature=0)
    )
    pieces: list[str] = []
    with counting_generate(m2m100) as calls:
        translation.run(pieces.append)
    call = calls[0]
    assert tokens(m2m100, call["input_ids"][0])[0] == "__de__"  # set by tokenizer.src_lang
    assert call["forced_bos_token_id"] == tokenizer.get_lang_id("no")
    output = regenerate(m2m100, call)
    assert tokens(m2m100, output[1:2]) == ["__no__"]
    # This tokenizer does not mark language tokens special: the stream leaves them out.
    language_ids = set(tokenizer.lang_code_to_id.values())
    text_ids = [t for t in output.tolist() if t not in language_ids]
    assert "".join(pieces) == tokenizer.decode(text_ids, skip_special_tokens=True)
    assert "__no__" not in translation.text
    assert translation.stats.completion_tokens == len(output) - 1


def test_the_user_can_override_the_detected_source(nllb: LoadedModel) -> None:
    with counting_generate(nllb) as calls:
        translation = TranslationStream(nllb, SENTENCES["en"], source="Dutch", target="fr")
        translation()
    assert (translation.source, translation.detected) == ("nl", False)
    assert tokens(nllb, calls[0]["input_ids"][0])[0] == "nld_Latn"


def test_multi_target_marian_prefixes_the_target_token(marian_multi: LoadedModel) -> None:
    with counting_generate(marian_multi) as calls:
        TranslationStream(marian_multi, SENTENCES["en"], target="it")()
    assert tokens(marian_multi, calls[0]["input_ids"][0])[0] == ">>it<<"
    assert "forced_bos_token_id" not in calls[0]


def test_single_pair_marian_takes_the_bare_text(marian: LoadedModel) -> None:
    with counting_generate(marian) as calls:
        text = TranslationStream(marian, SENTENCES["en"], target="de")()
    first = marian.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=True)
    assert first.startswith("The weather")
    assert text.strip()


def test_t5_gets_its_translation_prefix(t5: LoadedModel) -> None:
    with counting_generate(t5) as calls:
        TranslationStream(t5, SENTENCES["en"], target="fr")()
    encoded = t5.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=True)
    assert encoded.startswith("translate English to French: The weather")


# -- streaming ---------------------------------------------------------------------------------


def test_lines_are_kept_and_long_lines_are_translated_in_chunks(
    marian: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import generation.translate as translate

    monkeypatch.setattr(translate, "MAX_CHUNK_TOKENS", 40)
    long_line = " ".join([SENTENCES["en"]] * 4)
    text = f"{SENTENCES['en']}\n\n{long_line}"
    pieces: list[str] = []
    translation = TranslationStream(marian, text, target="de", params=SamplingParams(temperature=0))
    with counting_generate(marian) as calls:
        stats = translation.run(pieces.append)
    assert len(calls) > 3  # one for the first line, several for the long one
    assert all(int(c["input_ids"].shape[1]) <= 40 + 1 for c in calls)  # chunk + </s>
    assert "".join(pieces) == translation.text
    assert translation.text.count("\n") == 2
    assert stats.prompt_tokens == sum(int(c["input_ids"].shape[1]) for c in calls)
    assert stats.first_token_seconds is not None
    # Each chunk's budget follows its input's length.
    assert all(c["max_new_tokens"] == 2 * int(c["input_ids"].shape[1]) + 16 for c in calls)


def test_stop_flag_ends_the_whole_translation(marian: LoadedModel) -> None:
    text = "\n".join([SENTENCES["en"]] * 3)
    translation = TranslationStream(marian, text, target="de", should_stop=lambda: True)
    with counting_generate(marian) as calls:
        stats = translation.run(lambda piece: None)
    assert stats.finish_reason == "stopped"
    assert len(calls) == 1


def test_chat_model_translates_through_a_prompt(llama: LoadedModel) -> None:
    with counting_generate(llama) as calls:
        translation = TranslationStream(llama, SENTENCES["de"], target="en")
        pieces: list[str] = []
        translation.run(pieces.append)
    prompt = llama.tokenizer.decode(calls[0]["input_ids"][0])
    assert "Translate this text from German to English:" in prompt
    assert SENTENCES["de"] in prompt
    assert "<|im_start|>system\nYou are a translator." in prompt
    assert "".join(pieces) == translation.text
