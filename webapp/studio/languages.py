"""What each translation model offers, for the translate page, read from the model's
config and tokenizer files only (the web process loads no weights, no torch and no
transformers), cached per catalog entry.

A model whose languages cannot be told this way (a hub id that is not in the local cache,
an RNN, an unknown family) gets None: the page offers every language and the worker's own
check answers an unsupported pair with a clear error naming what the model supports.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from generation.languages import LANGUAGES, LanguageSupport, facts_from_folder, support_from
from generation.specs import Backend, looks_like_path
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


def model_folder(source: str) -> Path | None:
    """The folder of a local model, or of a hub model already in the local cache."""
    if looks_like_path(source):
        return Path(source).expanduser()
    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not cached here (and never fetched from the web process)
        return None


def _read_support(entry: ModelEntry) -> LanguageSupport | None:
    if entry.backend != Backend.TRANSFORMERS:
        return None
    try:
        folder = model_folder(entry.source)
        if folder is None:
            raise FileNotFoundError(f"{entry.source} is not in the local model cache")
        return support_from(facts_from_folder(folder, (entry.source, entry.name)), entry.name)
    except Exception as exc:  # damaged folder, unknown family
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
