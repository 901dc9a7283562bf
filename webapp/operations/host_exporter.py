"""/metrics of a worker host that runs no web process: with ATELIER_METRICS_PORT set, the
Celery worker serves, on that port, the metrics of every process sharing its host's
multiprocess folder, under the same access rules as the web's /metrics. Only what the
processes recorded: the gauges read at scrape time (queues, workers, batches) come from
the web's /metrics, which reads them from the shared database and Redis. A host that runs
a web process beside its workers needs no exporter (its web process serves the folder)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST

from webapp.operations import exposition
from webapp.operations.access import Access, access_for

log = logging.getLogger(__name__)

_STATUS = {Access.CLOSED: 404, Access.DENIED: 403}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        access = access_for(self.headers.get("Authorization", ""), self.client_address[0])
        if access is not Access.ALLOWED:
            self.send_error(_STATUS[access])
            return
        body = exposition.render(with_state=False)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        return


def start(port: int | None = None, host: str | None = None) -> ThreadingHTTPServer | None:
    """Serve on ATELIER_METRICS_PORT (None when it is 0, the default: no exporter)."""
    port = settings.ATELIER_METRICS_PORT if port is None else port
    if not port:
        return None
    host = settings.ATELIER_METRICS_HOST if host is None else host
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="atelier-metrics", daemon=True).start()
    log.info("serving this host's metrics at http://%s:%d/metrics", host, server.server_port)
    return server
