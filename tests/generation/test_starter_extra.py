"""The starter pack's EfficientNet-Lite0 and all-MiniLM-L6-v2, prepared from their PyPI
packages and checked on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generation.embeddings import cosine_similarity, embed, load_embedder
from generation.loading import LoadedModel, load_image_classifier
from generation.specs import ModelSpec, Task
from generation.starter import (
    EFFICIENTNET_FOLDER,
    LITE0_MEAN,
    LITE0_STD,
    MINILM_FOLDER,
    PreparedModel,
    find_packaged_file,
    imagenet_label_names,
    prepare_efficientnet_lite0,
    prepare_minilm,
)
from generation.vision import classify_image


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("starter-models")


@pytest.fixture(scope="module")
def lite0(models_dir: Path) -> PreparedModel:
    return prepare_efficientnet_lite0(models_dir)


@pytest.fixture(scope="module")
def lite0_model(lite0: PreparedModel) -> LoadedModel:
    spec = ModelSpec(name="efficientnet-lite0", source=str(lite0.folder), task=Task.CLASSIFY_IMAGE)
    return load_image_classifier(spec)


@pytest.fixture(scope="module")
def minilm(models_dir: Path) -> PreparedModel:
    return prepare_minilm(models_dir)


def sample_photo(name: str) -> bytes:
    """A real photograph shipped in a package: scikit-learn's sample images (china.jpg, a
    temple; flower.jpg, a daisy). scikit-learn comes with alt-profanity-check, another
    starter-pack model."""
    try:
        return find_packaged_file("scikit-learn", f"datasets/images/{name}").read_bytes()
    except FileNotFoundError as exc:
        pytest.skip(f"no sample photo: {exc}")


# -- EfficientNet-Lite0 ------------------------------------------------------------------------


def test_lite0_is_prepared_once(lite0: PreparedModel, models_dir: Path) -> None:
    assert lite0.created
    assert lite0.folder == models_dir / EFFICIENTNET_FOLDER
    marker = json.loads((lite0.folder / "atelier-prepared.json").read_text())
    assert marker["from"].endswith(".pth")
    again = prepare_efficientnet_lite0(models_dir)
    assert (again.created, again.folder) == (False, lite0.folder)
    assert not (models_dir / (EFFICIENTNET_FOLDER + ".partial")).exists()


def test_lite0_folder_has_imagenet_names_and_its_own_normalisation(
    lite0_model: LoadedModel,
) -> None:
    config = lite0_model.model.config
    assert type(lite0_model.model).__name__ == "EfficientNetForImageClassification"
    assert config.num_labels == 1000
    names = imagenet_label_names()
    assert config.id2label[1] == names[1] == "goldfish"
    assert config.hidden_act == "relu6"
    processor = lite0_model.processor
    assert processor.image_mean == pytest.approx(LITE0_MEAN)
    assert processor.image_std == pytest.approx(LITE0_STD)
    assert processor.crop_size["height"] == 224


def test_lite0_squeeze_excite_is_an_identity(lite0_model: LoadedModel) -> None:
    # Lite0 has no squeeze-excite; the converted model's (required) one passes all through.
    block = lite0_model.model.efficientnet.encoder.blocks[3]
    features = torch.randn(1, block.squeeze_excite.dim, 7, 7)
    with torch.inference_mode():
        assert torch.equal(block.squeeze_excite(features), features)


def test_lite0_classifies_real_photos(lite0_model: LoadedModel) -> None:
    flower = classify_image(lite0_model, sample_photo("flower.jpg"), top_k=5)
    temple = classify_image(lite0_model, sample_photo("china.jpg"), top_k=5)
    print("flower.jpg:", [(r.label, round(r.score, 3)) for r in flower])
    print("china.jpg:", [(r.label, round(r.score, 3)) for r in temple])
    assert flower[0].label == "daisy"
    assert temple[0].label == "palace"
    assert {"monastery", "bell tower"} & {r.label for r in temple}
    assert flower[0].score > 0.2 and temple[0].score > 0.2


# -- all-MiniLM-L6-v2 --------------------------------------------------------------------------


def test_minilm_is_prepared_once(minilm: PreparedModel, models_dir: Path) -> None:
    assert minilm.created
    assert minilm.folder == models_dir / MINILM_FOLDER
    for name in ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        assert (minilm.folder / name).is_file(), name
    again = prepare_minilm(models_dir)
    assert (again.created, again.folder) == (False, minilm.folder)


def test_minilm_similar_sentences_score_higher(minilm: PreparedModel) -> None:
    loaded = load_embedder(ModelSpec(name="minilm", source=str(minilm.folder), task=Task.EMBED))
    sentences = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar on stage.",
        "The stock market fell sharply today.",
        "Shares dropped as investors panicked.",
    ]
    vectors = embed(loaded, sentences)
    assert vectors.shape == (4, 384)
    similarity = cosine_similarity(vectors, vectors)
    print("similarities:", [[round(float(v), 3) for v in row] for row in similarity])
    for a, b in ((0, 1), (2, 3)):  # the two pairs about the same thing
        unrelated = max(float(similarity[a, c]) for c in range(4) if c not in (a, b))
        assert float(similarity[a, b]) > 0.5
        assert float(similarity[a, b]) > unrelated + 0.3
