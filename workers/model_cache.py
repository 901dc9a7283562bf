"""Models loaded once per worker process and kept, least recently used evicted first.

Catalog entries that load the same weights the same way share one loaded copy: e.g. the
starter chat model also registered as the summarizer and the translator is held once. The
copy handed out carries the entry's own spec, so messages name the entry that was asked for.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import replace

from django.conf import settings

from generation.batching import Batcher, can_batch
from generation.loading import LoadedModel, load_model
from generation.rnn.batching import RNNBatcher
from generation.rnn.loading import LoadedRNN, load_rnn
from generation.specs import Backend, ModelSpec, Task
from webapp.catalog.models import ModelEntry
from webapp.operations import metrics

log = logging.getLogger(__name__)

Loaded = LoadedModel | LoadedRNN

# Tasks whose models load the same way (a language model and its tokenizer).
_TEXT_TASKS = (Task.CHAT, Task.SUMMARIZE, Task.TRANSLATE, Task.MODERATION)
# Tasks whose causal LMs decode many requests together (generation.batching).
_BATCHED_TASKS = (Task.CHAT, Task.SUMMARIZE, Task.TRANSLATE)

# _lock guards the dict for a moment at a time; _loading lets one model load at a time
# (its memory, and each model once) without holding _lock: the heartbeat reads what is
# held (`held`) every beat, and a worker whose beats wait for a load looks dead.
_lock = threading.Lock()
_loading = threading.Lock()
_loaded: OrderedDict[tuple[str, ...], Loaded] = OrderedDict()


def _load_key(spec: ModelSpec) -> tuple[str, ...]:
    family = "text" if spec.task in _TEXT_TASKS else spec.task.value
    return (family, spec.backend, spec.source, spec.quantization, spec.device)


def _load(spec: ModelSpec) -> Loaded:
    if spec.backend is Backend.RNN:
        return load_rnn(spec)
    return load_model(spec)


def _batch(loaded: Loaded, entry: ModelEntry) -> None:
    """Give a batchable model its batcher, sized by the entry asking for it (entries that
    share the weights share the batcher; the last one asking sets its size)."""
    if entry.task not in _BATCHED_TASKS:
        return
    size = entry.batch_size(loaded.device.type)
    if loaded.batcher is not None:
        loaded.batcher.max_batch = size
    elif size > 1 and isinstance(loaded, LoadedRNN):
        loaded.batcher = RNNBatcher(loaded, size)
    elif size > 1 and isinstance(loaded, LoadedModel) and can_batch(loaded):
        loaded.batcher = Batcher(loaded, size)


def get_model(entry: ModelEntry) -> Loaded:
    """The loaded model for a catalog entry; loaded again when the entry's source,
    backend, quantization or device changed. A load holds `_loading`, never `_lock`."""
    spec = entry.spec()
    key = _load_key(spec)
    loaded = _held(key, entry)
    if loaded is None:
        with _loading:
            loaded = _held(key, entry) or _load_into_cache(key, spec, entry)
    if loaded.spec == spec:
        return loaded
    return replace(loaded, spec=spec)  # the same weights, named after this entry


def _held(key: tuple[str, ...], entry: ModelEntry) -> Loaded | None:
    """The model held under `key`, sized for `entry`'s batch, as the most recently used."""
    with _lock:
        loaded = _loaded.get(key)
        if loaded is not None:
            _loaded.move_to_end(key)
            _batch(loaded, entry)
        return loaded


def _load_into_cache(key: tuple[str, ...], spec: ModelSpec, entry: ModelEntry) -> Loaded:
    """Loads a model (the caller holds `_loading`), evicting the least recently used first."""
    with _lock:
        while len(_loaded) >= max(1, settings.ATELIER_WORKER_MAX_MODELS):
            evicted, _ = _loaded.popitem(last=False)
            log.info("evicting model %s to make room", evicted[2])
    gc.collect()
    try:
        loaded = _load(spec)
    except Exception:
        metrics.model_load_failed(entry.name)
        raise
    metrics.model_loaded(entry.name, loaded.load_seconds)
    with _lock:
        _loaded[key] = loaded
        _batch(loaded, entry)
    return loaded


def peek(entry: ModelEntry) -> Loaded | None:
    """The entry's model if this process holds it now (loads nothing)."""
    with _lock:
        return _loaded.get(_load_key(entry.spec()))


def held() -> list[Loaded]:
    """The models this process holds now (for its heartbeat's report)."""
    with _lock:
        return list(_loaded.values())


def clear() -> None:
    with _lock:
        _loaded.clear()
