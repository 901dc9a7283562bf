"""The folder where every process of a host writes its metrics (prometheus-client's
multiprocess mode). Imports no prometheus_client: it is read from the environment when
that is first imported, so the run command sets it before starting anything."""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(var_dir: Path) -> Path:
    """Create the folder (PROMETHEUS_MULTIPROC_DIR, else `<var>/metrics`), empty of the
    files a previous run left, and name it in the environment the children inherit."""
    folder = Path(os.environ.get(VARIABLE) or var_dir / "metrics")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[VARIABLE] = str(folder)
    return folder


def forget_process(pid: int) -> None:
    """A child process of this host died: drop its live gauges (open WebSockets, say) so
    that /metrics counts only live processes. Its counters stay, as Prometheus expects."""
    folder = os.environ.get(VARIABLE)
    if not folder:
        return
    import socket

    # Imported here, not at the top: prometheus_client reads VARIABLE when first imported,
    # and the run command sets it (prepare) after importing this module.
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(f"{socket.gethostname().replace('_', '-')}-{pid}", folder)
