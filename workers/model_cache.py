"""Models loaded once per worker process and kept, least recently used evicted first."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict

from django.conf import settings

from generation.loading import LoadedModel, load_causal_lm
from webapp.catalog.models import ModelEntry

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: OrderedDict[tuple[int, str], LoadedModel] = OrderedDict()


def get_model(entry: ModelEntry) -> LoadedModel:
    """The loaded model for a catalog entry; reloaded when the entry was edited."""
    key = (entry.pk, entry.updated_at.isoformat())
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        for stale in [k for k in _loaded if k[0] == entry.pk]:
            del _loaded[stale]
        while len(_loaded) >= max(1, settings.ATELIER_WORKER_MAX_MODELS):
            evicted, _ = _loaded.popitem(last=False)
            log.info("evicting model entry %s to make room", evicted[0])
        gc.collect()
        loaded = load_causal_lm(entry.spec())
        _loaded[key] = loaded
        return loaded


def clear() -> None:
    with _lock:
        _loaded.clear()
