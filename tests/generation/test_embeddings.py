"""Sentence embeddings on a tiny random BERT: mean pooling, normalisation, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generation.embeddings import cosine_similarity, embed, load_embedder, max_sequence_length
from generation.loading import LoadedModel, load_model
from generation.specs import GenerationError, ModelSpec, Quantization, Task
from tests.tiny.models import build_tiny_bert

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "A language model predicts the next token.",
    "Hello!",
]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def bert(bert_folder: Path) -> LoadedModel:
    return load_embedder(ModelSpec(name="tiny-bert", source=str(bert_folder), task=Task.EMBED))


def manual_embedding(loaded: LoadedModel, text: str) -> torch.Tensor:
    """Mean of the token vectors (no padding), scaled to unit length, by hand."""
    encoded = loaded.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        hidden = loaded.model(**encoded).last_hidden_state[0]
    mean = hidden.mean(dim=0)
    return mean / mean.norm()


def test_loads_a_bert_encoder_through_from_pretrained(bert: LoadedModel) -> None:
    assert type(bert.model).__name__ == "BertModel"
    assert bert.model.training is False
    spec = ModelSpec(name="tiny-bert", source=bert.spec.source, task=Task.EMBED)
    assert type(load_model(spec).model).__name__ == "BertModel"


def test_embeddings_are_unit_vectors_one_per_text(bert: LoadedModel) -> None:
    vectors = embed(bert, TEXTS)
    assert vectors.shape == (len(TEXTS), 32)
    assert vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


def test_mean_pooling_matches_a_manual_computation(bert: LoadedModel) -> None:
    vectors = embed(bert, TEXTS)
    for text, vector in zip(TEXTS, vectors, strict=True):
        assert torch.allclose(vector, manual_embedding(bert, text), atol=1e-5)


def test_padding_and_batching_do_not_change_an_embedding(bert: LoadedModel) -> None:
    together = embed(bert, TEXTS, batch_size=32)  # "Hello!" padded to the longest text
    one_by_one = embed(bert, TEXTS, batch_size=1)
    assert torch.allclose(together, one_by_one, atol=1e-5)
    # Input order is kept though batches are formed by length.
    assert torch.allclose(embed(bert, TEXTS[::-1]), together.flip(0), atol=1e-5)


def test_same_text_same_vector_different_texts_differ(bert: LoadedModel) -> None:
    vectors = embed(bert, [TEXTS[0], TEXTS[1], TEXTS[0]])
    similarities = cosine_similarity(vectors, vectors)
    assert similarities[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert similarities[0, 1] < 0.999


def test_cosine_similarity_shapes_and_values() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([3.0, 3.0])
    result = cosine_similarity(a, b)
    assert result.shape == (2, 1)
    assert torch.allclose(result[:, 0], torch.tensor([2**-0.5, 2**-0.5]))
    assert torch.allclose(cosine_similarity(a, a), torch.eye(2))
    assert cosine_similarity(a, -a)[0, 0] == pytest.approx(-1.0)


def test_long_texts_are_cut_at_the_sentence_transformers_limit(
    bert_folder: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "bert"
    shutil.copytree(bert_folder, folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    loaded = load_embedder(ModelSpec(name="capped", source=str(folder), task=Task.EMBED))
    assert max_sequence_length(loaded) == 16
    long_text = " ".join(TEXTS * 5)
    prefix_ids = loaded.tokenizer(long_text, truncation=True, max_length=16)["input_ids"]
    prefix = loaded.tokenizer.decode(prefix_ids, skip_special_tokens=True)
    # Cutting at 16 tokens is the same as embedding the first 14 tokens (plus CLS and SEP).
    assert torch.allclose(embed(loaded, [long_text]), embed(loaded, [prefix]), atol=1e-5)


def test_without_that_file_the_model_limit_applies(bert: LoadedModel) -> None:
    assert max_sequence_length(bert) == 128


def test_int8_dynamic_embeddings_stay_close(bert_folder: Path, bert: LoadedModel) -> None:
    spec = ModelSpec(
        name="tiny-bert-int8",
        source=str(bert_folder),
        task=Task.EMBED,
        quantization=Quantization.INT8_DYNAMIC,
    )
    quantized = load_embedder(spec)
    agreement = (embed(quantized, TEXTS) * embed(bert, TEXTS)).sum(dim=1)
    assert bool((agreement > 0.98).all()), agreement


def test_bad_input_is_refused(bert: LoadedModel) -> None:
    with pytest.raises(GenerationError, match="nothing to embed"):
        embed(bert, [])
    with pytest.raises(TypeError, match="sequence of texts"):
        embed(bert, "a single string")
    with pytest.raises(ValueError, match="batch_size"):
        embed(bert, TEXTS, batch_size=0)
