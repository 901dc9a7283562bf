"""Sentence embeddings for search: a BERT-style encoder (e.g. all-MiniLM-L6-v2), mean
pooling over the tokens that are not padding, then L2 normalisation, as
sentence-transformers computes them. With unit vectors, cosine similarity is a dot product.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from generation.loading import LoadedModel, load_text_encoder
from generation.specs import GenerationError, looks_like_path

__all__ = ["cosine_similarity", "embed", "load_embedder", "max_sequence_length"]

load_embedder = load_text_encoder  # the loading path every task shares


def max_sequence_length(loaded: LoadedModel) -> int:
    """How many tokens a text may have before it is cut: sentence-transformers folders say
    it in sentence_bert_config.json (256 for all-MiniLM-L6-v2, shorter than the 512
    positions the encoder has, because it was trained so); otherwise the model's limit."""
    source = loaded.spec.source
    if looks_like_path(source):
        config = Path(source).expanduser() / "sentence_bert_config.json"
        if config.is_file():
            value = json.loads(config.read_text()).get("max_seq_length")
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(loaded.tokenizer, "model_max_length", None)
    context = loaded.context_length
    return min(context, limit) if isinstance(limit, int) and limit > 0 else context


def embed(loaded: LoadedModel, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Unit-length embeddings, one row per text (float32, on the CPU), in input order.

    Texts are batched by length so that little compute goes to padding.
    """
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not texts:
        raise GenerationError("nothing to embed")
    max_length = max_sequence_length(loaded)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        encoded = loaded.tokenizer(
            [texts[i] for i in batch],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(loaded.device)
        with torch.inference_mode():
            hidden = loaded.model(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        vectors = F.normalize(pooled, p=2, dim=1).cpu()
        for row, index in enumerate(batch):
            rows[index] = vectors[row]
    return torch.stack(rows)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities: (n, d) x (m, d) -> (n, m); 1-D inputs count as n=1."""
    left = F.normalize(a.float().reshape(-1, a.shape[-1]), dim=1)
    right = F.normalize(b.float().reshape(-1, b.shape[-1]), dim=1)
    return left @ right.T
