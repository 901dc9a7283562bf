"""Small typed readers for settings from environment variables (no Django imports)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false, yes/no), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, not {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file that NAME_FILE points to (docker secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def database_from_url(url: str, base_dir: Path) -> dict[str, Any]:
    """A Django DATABASES entry from sqlite:///path or postgres://user:pass@host:port/name."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///var/db.sqlite3 is relative to the project; sqlite:////abs/db is absolute.
        raw = unquote(parsed.path)
        name = Path(raw[1:]) if raw.startswith("//") else base_dir / raw.lstrip("/")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(name),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # A pool of connections per process (psycopg_pool), each checked as it is
            # handed out: a request borrows one instead of connecting, which matters when
            # many messages are stored at once. Persistent connections cannot be pooled.
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": True,
            # While the database restarts: a request waits at most ATELIER_DB_POOL_TIMEOUT
            # seconds for a connection (then the page is told so), and the pool retries a
            # lost server for 2 s at a time rather than with a backoff that grows to
            # minutes, so the first request after the restart connects at once.
            "OPTIONS": {
                "pool": {
                    "min_size": 1,
                    "max_size": env_int("ATELIER_DB_POOL_SIZE", 20),
                    "timeout": env_int("ATELIER_DB_POOL_TIMEOUT", 5),
                    "reconnect_timeout": 2,
                }
            },
        }
    raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (sqlite or postgres)")
