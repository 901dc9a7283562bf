from pathlib import Path

import pytest

from webapp.env import database_from_url, env_bool, env_int, env_list, env_secret


def test_sqlite_url_relative_to_project_and_absolute() -> None:
    base = Path("/srv/atelier")
    assert (
        database_from_url("sqlite:///var/db.sqlite3", base)["NAME"] == "/srv/atelier/var/db.sqlite3"
    )
    assert database_from_url("sqlite:////data/db.sqlite3", base)["NAME"] == "/data/db.sqlite3"


def test_postgres_url_parts() -> None:
    db = database_from_url("postgres://bob:s%40cret@db.internal:6543/atelier", Path("/x"))
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "bob", "s@cret", "db.internal", "6543", "atelier",
    )  # fmt: skip
    # A pool per process, each connection checked as it is handed out (pooled connections
    # cannot also be persistent).
    assert db["OPTIONS"]["pool"] == {
        "min_size": 1, "max_size": 20, "timeout": 5, "reconnect_timeout": 2,
    }  # fmt: skip
    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (0, True)


def test_unknown_database_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mysql"):
        database_from_url("mysql://x/y", Path("/x"))


def test_typed_readers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLAG", "yes")
    monkeypatch.setenv("COUNT", "12")
    monkeypatch.setenv("HOSTS", "a.example, b.example,")
    assert env_bool("FLAG") is True
    assert env_bool("MISSING_FLAG", True) is True
    assert env_int("COUNT", 0) == 12
    assert env_list("HOSTS", []) == ["a.example", "b.example"]
    monkeypatch.setenv("FLAG", "perhaps")
    with pytest.raises(ValueError, match="FLAG must be a boolean"):
        env_bool("FLAG")
    monkeypatch.setenv("COUNT", "many")
    with pytest.raises(ValueError, match="COUNT must be an integer"):
        env_int("COUNT", 0)
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("TOKEN_FILE", str(secret))
    assert env_secret("TOKEN") == "from-a-file"
