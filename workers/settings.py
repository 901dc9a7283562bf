"""Settings of the processes that do worker work: the Celery worker and `manage.py`
commands. They are the web's settings plus the `workers` app, whose management commands
(prepare_models, train_rnn, batch_summarize) load models. Daphne and everything else of
the web side use `webapp.settings`, which leaves `workers` out, so the web process never
imports it (tests/test_web_imports.py)."""

from webapp.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "workers"]  # noqa: F405
