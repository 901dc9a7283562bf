"""The translate page's reading of a model's languages (webapp.studio.languages: its files
with plain JSON, no torch or transformers) agrees with the worker's
(generation.translate.supported_languages on the loaded model), for every family Atelier
translates with; a hub id is read from the local Hugging Face cache only."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest

from generation.languages import LanguageSupport
from generation.loading import load_model
from generation.translate import supported_languages
from tests.conftest import DIRECT_QUEUE
from tests.tiny.causal import build_tiny_causal_lm
from tests.tiny.models import build_tiny_m2m100, build_tiny_marian, build_tiny_nllb, build_tiny_t5
from webapp.catalog.models import ModelEntry
from webapp.studio import languages

pytestmark = pytest.mark.django_db

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "marian": lambda folder: build_tiny_marian(folder, "en", "de"),
    "marian-multi": lambda folder: build_tiny_marian(folder, target_codes=("de", "fr", "xx")),
    "m2m100": build_tiny_m2m100,
    "nllb": build_tiny_nllb,
    "t5": build_tiny_t5,
    "chat": lambda folder: build_tiny_causal_lm(folder, family="llama"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("translators")
    return {kind: build(root / kind) for kind, build in BUILDERS.items()}


def entry_for(name: str, source: str, task: str = "translate") -> ModelEntry:
    return ModelEntry.objects.create(name=name, task=task, source=source, queue=DIRECT_QUEUE)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_the_page_reads_what_the_worker_tells(kind: str, folders: dict[str, Path]) -> None:
    entry = entry_for(f"tiny-{kind}", str(folders[kind]), "chat" if kind == "chat" else "translate")
    from_page = languages.support_for(entry)
    from_worker = supported_languages(load_model(entry.spec()))
    assert from_page is not None
    assert from_page == from_worker
    assert from_page.family == kind.removesuffix("-multi")


def test_a_hub_model_in_the_local_cache_is_read_from_there(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--opus-mt-en-de"
    shutil.copytree(folders["marian"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = entry_for("cached-marian", "tiny-org/opus-mt-en-de")
    assert languages.model_folder(entry.source) == repo / "snapshots" / revision
    assert languages.support_for(entry) == LanguageSupport(
        "marian", ("en",), ("de",), (("en", "de"),)
    )


def test_what_cannot_be_told_without_loading_gives_none(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    assert languages.model_folder("tiny-org/not-cached-here") is None
    assert languages.support_for(entry_for("not-cached", "tiny-org/not-cached-here")) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert languages.support_for(entry_for("broken", str(broken))) is None
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert", "is_encoder_decoder": true}')
    assert languages.support_for(entry_for("not-a-translator", str(bert))) is None
