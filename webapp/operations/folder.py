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
