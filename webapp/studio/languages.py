"""What each translation model offers, for the translate page, read from the model's
config and tokenizer only (the web process never loads weights), cached per catalog entry.

A model whose languages cannot be told this way (a hub id that is not cached, an RNN, an
unknown family) gets None: the page offers every language and the worker's own check
answers an unsupported pair with a clear error naming what the model supports.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import torch

from generation.loading import LoadedModel
from generation.specs import Backend
from generation.translate import LANGUAGES, LanguageSupport, supported_languages
from webapp.catalog.models import ModelEntry

log = logging.getLogger(__name__)

CacheKey = tuple[int, str, str]
_cache: dict[CacheKey, LanguageSupport | None] = {}
_lock = threading.Lock()


def language_choices() -> list[tuple[str, str]]:
    """(code, English name) for every language Atelier knows, by name."""
    return sorted(((code, name) for code, (name, _) in LANGUAGES.items()), key=lambda c: c[1])


def support_for(entry: ModelEntry) -> LanguageSupport | None:
    """The languages the entry's model translates, or None when that cannot be told
    without loading it. Cached until the entry changes."""
    key = (entry.pk, entry.source, entry.updated_at.isoformat() if entry.updated_at else "")
    with _lock:
        if key in _cache:
            return _cache[key]
    support = _read_support(entry)
    with _lock:
        _cache[key] = support
    return support


def _read_support(entry: ModelEntry) -> LanguageSupport | None:
    if entry.backend != Backend.TRANSFORMERS:
        return None
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(entry.source)
        tokenizer: Any = None
        if getattr(config, "is_encoder_decoder", False):
            tokenizer = AutoTokenizer.from_pretrained(entry.source)
        # supported_languages reads the config, the tokenizer and the spec, never weights.
        loaded = LoadedModel(
            spec=entry.spec(),
            model=SimpleNamespace(config=config),
            tokenizer=tokenizer,
            device=torch.device("cpu"),
            load_seconds=0.0,
        )
        return supported_languages(loaded)
    except Exception as exc:  # offline hub id, damaged folder, unknown family
        log.info("languages of model %r not known without loading it: %s", entry.name, exc)
        return None


def offers(entries: list[ModelEntry]) -> dict[str, dict[str, Any]]:
    """For the page's script: per model id, its sources (None: any), targets and pairs
    (None: any source to any target). Models missing from the map offer everything."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        support = support_for(entry)
        if support is None:
            continue
        found[str(entry.pk)] = {
            "family": support.family,
            "sources": list(support.sources) if support.sources is not None else None,
            "targets": list(support.targets),
            "pairs": [list(p) for p in support.pairs] if support.pairs is not None else None,
        }
    return found
