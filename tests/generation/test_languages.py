"""What a translation model offers, told from its files alone (the web process, no
transformers) agrees with what the worker tells from the loaded model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from generation.languages import (
    LANGUAGES,
    LanguageSupport,
    UnsupportedLanguageError,
    facts_from_folder,
    support_from,
)
from generation.loading import load_model
from generation.specs import ModelSpec, Task
from generation.translate import supported_languages
from tests.tiny.causal import build_tiny_causal_lm
from tests.tiny.models import build_tiny_m2m100, build_tiny_marian, build_tiny_nllb, build_tiny_t5

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "marian": build_tiny_marian,
    "marian-multi": lambda folder: build_tiny_marian(folder, target_codes=("de", "fr", "xx")),
    "m2m100": build_tiny_m2m100,
    "nllb": build_tiny_nllb,
    "t5": build_tiny_t5,
    "chat": lambda folder: build_tiny_causal_lm(folder, family="llama"),
}
EXPECTED_FAMILY = {"marian-multi": "marian"}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_the_files_tell_what_the_loaded_model_tells(kind: str, tmp_path: Path) -> None:
    folder = BUILDERS[kind](tmp_path / kind)
    task = Task.CHAT if kind == "chat" else Task.TRANSLATE
    loaded = load_model(ModelSpec(name=kind, source=str(folder), task=task))
    from_worker = supported_languages(loaded)
    from_files = support_from(facts_from_folder(folder, (str(folder), kind)), kind)
    assert from_files == from_worker
    assert from_files.family == EXPECTED_FAMILY.get(kind, kind)


def test_a_multi_target_marian_offers_its_known_target_tokens(tmp_path: Path) -> None:
    folder = build_tiny_marian(tmp_path / "m", target_codes=("de", "fr", "xx"))
    support = support_from(facts_from_folder(folder), "m")
    assert support == LanguageSupport("marian", ("en",), ("de", "fr"), (("en", "de"), ("en", "fr")))


def test_m2m100_offers_every_language_atelier_knows(tmp_path: Path) -> None:
    folder = build_tiny_m2m100(tmp_path / "m")
    support = support_from(facts_from_folder(folder), "m")
    assert support.sources == tuple(LANGUAGES) and support.allows("nb", "de")


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_an_m2m100_tokenizer_config_without_its_language_set_means_m2m100(tmp_path: Path) -> None:
    folder = build_tiny_m2m100(tmp_path / "m")
    _edit_json(folder / "tokenizer_config.json", lambda config: config.pop("language_codes"))
    support = support_from(facts_from_folder(folder), "m")
    assert support.family == "m2m100" and support.sources == tuple(LANGUAGES)


def test_nllb_codes_kept_in_special_tokens_map_are_found(tmp_path: Path) -> None:
    folder = build_tiny_nllb(tmp_path / "n")
    tokens = json.loads((folder / "tokenizer_config.json").read_text())["extra_special_tokens"]
    _edit_json(folder / "tokenizer_config.json", lambda config: config.pop("extra_special_tokens"))
    _edit_json(folder / "tokenizer.json", lambda fast: fast.update(added_tokens=[]))
    with pytest.raises(UnsupportedLanguageError, match="names no language codes"):
        support_from(facts_from_folder(folder), "n")
    map_file = folder / "special_tokens_map.json"
    map_file.write_text(json.dumps({"additional_special_tokens": [{"content": t} for t in tokens]}))
    support = support_from(facts_from_folder(folder), "n")
    assert support.family == "nllb" and support.targets == tuple(LANGUAGES)
