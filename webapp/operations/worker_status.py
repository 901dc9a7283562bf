"""What each worker holds, published beside its heartbeat (workers/heartbeat.py calls
`publish` every beat): its loaded models with their batch rows, batch size and weights'
memory, and the process's memory. The Operations page and /metrics read it back with
`reports`. The key expires like the heartbeat, so a dead worker's report goes with it.

Imports no torch: a worker's loaded models are read by their attributes, and CUDA memory
only if the process has already imported torch (a web process never has)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from webapp.inference.streams import sync_redis


@dataclass(frozen=True)
class LoadedModelInfo:
    name: str  # the catalog entry that loaded it (entries sharing weights share it)
    device: str
    quantization: str
    rows: int  # requests its batch holds now: joining, prefilling or decoding
    max_batch: int  # 1: the model does not batch
    weights_bytes: int


@dataclass(frozen=True)
class WorkerReport:
    name: str
    models: tuple[LoadedModelInfo, ...]
    rss_bytes: int
    cuda_allocated_bytes: int | None
    reported_at: float  # time.time()


def _key(name: str) -> str:
    return f"{settings.ATELIER_REDIS_PREFIX}:worker-report:{name}"


def _weights_bytes(model: Any) -> int:
    footprint = getattr(model, "get_memory_footprint", None)
    if callable(footprint):
        return int(footprint())
    tensors = [*model.parameters(), *model.buffers()] if hasattr(model, "parameters") else []
    return sum(int(t.numel() * t.element_size()) for t in tensors)


def describe(loaded: Any) -> LoadedModelInfo:
    """A worker's loaded model (generation.loading.LoadedModel or LoadedRNN)."""
    batcher = loaded.batcher
    return LoadedModelInfo(
        name=loaded.spec.name,
        device=str(loaded.device),
        quantization=str(loaded.spec.quantization),
        rows=int(batcher.active) if batcher is not None else 0,
        max_batch=int(batcher.max_batch) if batcher is not None else 1,
        weights_bytes=_weights_bytes(loaded.model),
    )


def resident_bytes() -> int:
    """This process's resident memory now (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cuda_allocated_bytes() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())))


def publish(name: str, loaded_models: Iterable[Any]) -> None:
    report = WorkerReport(
        name=name,
        models=tuple(describe(loaded) for loaded in loaded_models),
        rss_bytes=resident_bytes(),
        cuda_allocated_bytes=cuda_allocated_bytes(),
        reported_at=time.time(),
    )
    sync_redis().set(
        _key(name), json.dumps(asdict(report)), ex=settings.ATELIER_WORKER_TIMEOUT_SECONDS
    )


def reports() -> dict[str, WorkerReport]:
    """The reports of the workers alive now, by worker name."""
    client = sync_redis()
    keys = list(client.scan_iter(match=_key("*"), count=500))
    found: dict[str, WorkerReport] = {}
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        data = json.loads(raw)
        models = tuple(LoadedModelInfo(**model) for model in data.pop("models", ()))
        report = WorkerReport(models=models, **data)
        found[report.name] = report
    return found
