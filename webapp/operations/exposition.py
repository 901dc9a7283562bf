"""/metrics' text: the metrics every process recorded (added up from the multiprocess
folder, or this process's own without one), and what is true now (`state`) read at scrape
time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from webapp.operations import metrics, state


class StateCollector(Collector):
    """Gauges computed when scraped: requests waiting and running per model and queue,
    live workers, and batch rows per loaded model (from the workers' reports)."""

    def collect(self) -> Iterable[Metric]:
        workers = state.live_workers()
        labels = ["model", "queue"]
        waiting = GaugeMetricFamily(
            "atelier_requests_waiting", "Generations queued now.", labels=labels
        )
        running = GaugeMetricFamily(
            "atelier_requests_running", "Generations running now.", labels=labels
        )
        for row in state.model_queues(workers):
            waiting.add_metric([row.model, row.queue], row.waiting)
            running.add_metric([row.model, row.queue], row.running)
        live = GaugeMetricFamily("atelier_live_workers", "Worker processes beating now.")
        live.add_metric([], len(workers))
        queues = sorted({queue for worker in workers for queue in worker.queues})
        serving = GaugeMetricFamily(
            "atelier_queue_workers", "Live workers consuming each queue.", labels=["queue"]
        )
        for queue in queues:
            serving.add_metric([queue], sum(1 for w in workers if queue in w.queues))
        rows = GaugeMetricFamily(
            "atelier_batch_rows",
            "Requests in a loaded model's batch now (joining, prefilling or decoding).",
            labels=["model"],
        )
        capacity = GaugeMetricFamily(
            "atelier_batch_capacity", "Rows a loaded model's batch may hold.", labels=["model"]
        )
        totals: dict[str, list[int]] = {}
        for worker in workers:
            for model in worker.report.models if worker.report else ():
                held = totals.setdefault(model.name, [0, 0])
                held[0] += model.rows
                held[1] += model.max_batch
        for name, (held_rows, held_capacity) in sorted(totals.items()):
            rows.add_metric([name], held_rows)
            capacity.add_metric([name], held_capacity)
        yield from (waiting, running, live, serving, rows, capacity)


class _ThisProcess(Collector):
    """This process's own metrics, when there is no multiprocess folder."""

    def collect(self) -> Iterator[Metric]:
        return iter(REGISTRY.collect())


def render(with_state: bool = True) -> bytes:
    """The exposition text: the processes' metrics, and (unless a worker host's exporter
    asks without) what is true now."""
    registry = CollectorRegistry()
    folder = metrics.multiprocess_dir()
    if folder is not None:
        MultiProcessCollector(registry, folder)
    else:
        registry.register(_ThisProcess())
    if with_state:
        registry.register(StateCollector())
    return generate_latest(registry)
