"""Atelier's one settings module. Every deployment knob is an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

import django_stubs_ext

from webapp.env import (
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_str,
)

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ATELIER_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env_bool("ATELIER_REQUIRE_SECRET_KEY", False):
        raise RuntimeError("SECRET_KEY is not set")
    # The launcher writes a random key to var/secret_key on first run; this is the fallback
    # for one-off management commands before that.
    key_file = VAR_DIR / "secret_key"
    SECRET_KEY = (
        key_file.read_text().strip() if key_file.is_file() else "insecure-dev-key-" + "x" * 40
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "webapp.accounts",
    "webapp.catalog",
    "webapp.inference",
    "webapp.chat",
    "webapp.moderation",
    "webapp.jobs",
    "webapp.studio",
    "webapp.api",
    "webapp.operations",
    "webapp.usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "webapp.no_room.NoRoomMiddleware",  # before the CSRF check reads a form's files
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.moderation.context.suspension",
            ],
        },
    },
]

# VAR_DIR is absolute, so the default is the four-slash (absolute) SQLite form.
DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'atelier.sqlite3'}"), BASE_DIR
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests that start real worker and web processes need a file, not an in-memory database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without a collectstatic step

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Redis: Celery broker, token streams and stop flags --------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prefix of every key Atelier writes (streams, flags), so that several deployments or
# test runs can share one Redis without seeing each other's data.
ATELIER_REDIS_PREFIX = env_str("ATELIER_REDIS_PREFIX", "atelier")

# --- Models ---------------------------------------------------------------------------
MODELS_DIR = Path(env_str("ATELIER_MODELS_DIR", str(VAR_DIR / "models")))
# Files people upload for a model (images to classify): web and workers must both see it.
UPLOADS_DIR = Path(env_str("ATELIER_UPLOADS_DIR", str(VAR_DIR / "uploads")))
HF_HUB_OFFLINE = env_bool("HF_HUB_OFFLINE", False)
if HF_HUB_OFFLINE:  # huggingface_hub reads the variable itself; give it a spelling it knows
    os.environ["HF_HUB_OFFLINE"] = "1"

# --- Product settings -----------------------------------------------------------------
# When true, people who sign up may generate at once; otherwise an admin approves them.
ATELIER_OPEN_SIGNUP = env_bool("ATELIER_OPEN_SIGNUP", False)
# Limits on what a client may ask for in one message.
ATELIER_MAX_MESSAGE_CHARS = env_int("ATELIER_MAX_MESSAGE_CHARS", 32_000)
ATELIER_MAX_SYSTEM_PROMPT_CHARS = env_int("ATELIER_MAX_SYSTEM_PROMPT_CHARS", 8_000)
ATELIER_MAX_FRAME_BYTES = env_int("ATELIER_MAX_FRAME_BYTES", 256 * 1024)
ATELIER_DEFAULT_MAX_TOKENS = env_int("ATELIER_DEFAULT_MAX_TOKENS", 512)
# How long a finished token stream stays in Redis for reconnecting clients (the text
# itself is in the database forever).
ATELIER_STREAM_RETENTION_SECONDS = env_int("ATELIER_STREAM_RETENTION_SECONDS", 3600)
# How often (milliseconds) the worker flushes coalesced tokens to the stream.
ATELIER_STREAM_FLUSH_MS = env_int("ATELIER_STREAM_FLUSH_MS", 30)
# A worker lowers its CPU priority by this much (Unix nice, 0 to 19) when it starts, so
# that on a machine it shares with the web process, storing messages and relaying tokens
# run first and the model takes the rest of the CPU. 0 leaves it as started.
ATELIER_WORKER_NICE = env_int("ATELIER_WORKER_NICE", 10)
# Models a worker process keeps loaded at once (catalog entries with the same weights,
# e.g. the starter chat model as chat model, summarizer and translator, count once).
ATELIER_WORKER_MAX_MODELS = env_int("ATELIER_WORKER_MAX_MODELS", 4)
# Generations a worker process runs at once, all models together (each model's own limit
# is its catalog entry's max_batch, or one for a model that does not batch).
ATELIER_WORKER_MAX_RUNS = env_int("ATELIER_WORKER_MAX_RUNS", 64)
# A worker with room looks for queued work this often (seconds) even without a wake-up.
ATELIER_WORKER_POLL_SECONDS = env_int("ATELIER_WORKER_POLL_SECONDS", 2)
# Largest image (bytes) a person may upload for classification.
ATELIER_MAX_IMAGE_BYTES = env_int("ATELIER_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
# Replies one user may have queued or running at once (admins can raise it per group).
ATELIER_MAX_CONCURRENT_GENERATIONS = env_int("ATELIER_MAX_CONCURRENT_GENERATIONS", 2)
# Quotas every user has unless a group of theirs (or an admin, per user) sets others;
# 0 means no limit. Tokens count prompts and outputs of every task; batch jobs and API
# keys draw on the same quotas. See webapp/accounts/quotas.py.
ATELIER_TOKENS_PER_DAY = env_int("ATELIER_TOKENS_PER_DAY", 0)
ATELIER_TOKENS_PER_MONTH = env_int("ATELIER_TOKENS_PER_MONTH", 0)
ATELIER_REQUESTS_PER_MINUTE = env_int("ATELIER_REQUESTS_PER_MINUTE", 0)
# A worker writes a heartbeat this often (seconds); one silent for WORKER_TIMEOUT seconds is
# taken for dead, and the generation it was running is requeued once, then failed.
ATELIER_WORKER_HEARTBEAT_SECONDS = env_int("ATELIER_WORKER_HEARTBEAT_SECONDS", 2)
ATELIER_WORKER_TIMEOUT_SECONDS = env_int("ATELIER_WORKER_TIMEOUT_SECONDS", 10)
ATELIER_GENERATION_MAX_ATTEMPTS = env_int("ATELIER_GENERATION_MAX_ATTEMPTS", 2)

# --- Moderation -----------------------------------------------------------------------
# Confirmed strikes within the window that suspend an account automatically (0: never).
ATELIER_STRIKES_TO_SUSPEND = env_int("ATELIER_STRIKES_TO_SUSPEND", 3)
# Streamed output is checked (and released) at each sentence end or after this many new
# characters, at a word boundary: smaller streams more smoothly, larger checks less often.
ATELIER_OUTPUT_CHECK_CHARS = env_int("ATELIER_OUTPUT_CHECK_CHARS", 24)
ATELIER_STRIKE_WINDOW_DAYS = env_int("ATELIER_STRIKE_WINDOW_DAYS", 30)
# Audit entries older than this are deleted by `manage.py purge_audit`.
ATELIER_AUDIT_RETENTION_DAYS = env_int("ATELIER_AUDIT_RETENTION_DAYS", 365)
# Whether the rules shipped in generation/safety/default_rules.json apply (admins' rules
# are added to them, and replace a shipped rule of the same id).
ATELIER_MODERATION_DEFAULT_RULES = env_bool("ATELIER_MODERATION_DEFAULT_RULES", True)
# --- Batch jobs -----------------------------------------------------------------------
# Generations of one job queued or running at once: enough to fill the background slots
# of a worker's batch (12 of the 16 on CPU; the rest are kept for interactive requests).
ATELIER_JOB_MAX_IN_FLIGHT = env_int("ATELIER_JOB_MAX_IN_FLIGHT", 12)
# Limits on uploaded job files.
ATELIER_JOB_MAX_UPLOAD_BYTES = env_int("ATELIER_JOB_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
ATELIER_JOB_MAX_ITEMS = env_int("ATELIER_JOB_MAX_ITEMS", 10_000)
ATELIER_JOB_MAX_ITEM_CHARS = env_int("ATELIER_JOB_MAX_ITEM_CHARS", 100_000)
ATELIER_JOB_ZIP_MAX_UNCOMPRESSED_BYTES = env_int(
    "ATELIER_JOB_ZIP_MAX_UNCOMPRESSED_BYTES", 200 * 1024 * 1024
)
ATELIER_JOB_ZIP_MAX_RATIO = env_int("ATELIER_JOB_ZIP_MAX_RATIO", 100)
# --- The OpenAI-compatible API (/v1/) --------------------------------------------------
# Whether users in no group that says otherwise may have API keys (admins always may).
ATELIER_API_KEYS_FOR_EVERYONE = env_bool("ATELIER_API_KEYS_FOR_EVERYONE", True)
# Largest JSON request body (bytes); files for the Batch API take ATELIER_JOB_MAX_UPLOAD_BYTES.
ATELIER_API_MAX_BODY_BYTES = env_int("ATELIER_API_MAX_BODY_BYTES", 2 * 1024 * 1024)
# Seconds between keep-alive comments of a stream waiting in the queue.
ATELIER_API_KEEPALIVE_SECONDS = env_int("ATELIER_API_KEEPALIVE_SECONDS", 5)
# --- One-shot pages (summarize, translate, classify an image) ---------------------------
# Longest text one summary or translation takes (pasted or read from a file); longer
# documents belong in a batch job.
ATELIER_STUDIO_MAX_TEXT_CHARS = env_int("ATELIER_STUDIO_MAX_TEXT_CHARS", 100_000)
# Largest .txt, .md or .pdf file accepted for a summary.
ATELIER_STUDIO_MAX_UPLOAD_BYTES = env_int("ATELIER_STUDIO_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)

# --- Metrics (/metrics for Prometheus; see docs/metrics.md) ------------------------------
# Every web and worker process writes its metrics to files in this folder (prometheus-client's
# multiprocess mode), and /metrics adds them up: the processes of a host must share it. It is
# read by prometheus-client when it is first imported, i.e. after these settings. The run
# command empties it at start. Unset: each process keeps its own (tests, one-off commands).
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /metrics answers 404 unless one of these is set: a bearer token (Authorization: Bearer
# <token>), or addresses and networks (e.g. 10.0.0.0/8,127.0.0.1) that may read it without.
ATELIER_METRICS_TOKEN = env_secret("ATELIER_METRICS_TOKEN")
ATELIER_METRICS_ALLOW = env_list("ATELIER_METRICS_ALLOW", [])
# A worker host without a web process serves its folder's metrics on this port (0: not),
# under the same rules (webapp/operations/host_exporter.py).
ATELIER_METRICS_PORT = env_int("ATELIER_METRICS_PORT", 0)
ATELIER_METRICS_HOST = env_str("ATELIER_METRICS_HOST", "0.0.0.0")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
