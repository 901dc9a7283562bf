"""The API's keys and errors without a worker: the key page and its audit trail, Bearer
and X-Api-Key, revoked and expired keys, pending and suspended accounts, and OpenAI's
error bodies and statuses for every kind of bad request (never HTML)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.utils import timezone

from tests.conftest import DIRECT_QUEUE
from webapp.api import keys
from webapp.api.models import ApiKey, GroupKeyAccess
from webapp.catalog.models import ModelEntry
from webapp.inference import liveness
from webapp.inference.models import Generation, Status
from webapp.moderation import services as moderation
from webapp.moderation.models import AuditEntry, ModerationEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker_alive() -> Any:
    """A heartbeat for the direct queue, as a live worker writes it (the 503 check reads
    heartbeats; these tests never get as far as a worker running anything)."""
    name = f"api-test-{DIRECT_QUEUE}"
    liveness.beat(name, [DIRECT_QUEUE])
    yield
    liveness.forget(name)


def api(
    client: Client, method: str, path: str, secret: str | None, body: Any = None, **headers: str
) -> Any:
    if secret is not None:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {secret}")
    kwargs: dict[str, Any] = dict(headers)
    if body is not None:
        kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
        kwargs["content_type"] = "application/json"
    return getattr(client, method)(path, **kwargs)


async def _collect(chunks: Any) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


@pytest.fixture
def secret(alice: Any) -> str:
    return keys.create_key(alice, "laptop").secret


# --- Keys ---------------------------------------------------------------------------------


def test_a_key_is_stored_as_a_hash_with_a_prefix_and_its_life_is_audited(
    alice: Any, chat_model: ModelEntry
) -> None:
    created = keys.create_key(alice, "notebook")
    key = ApiKey.objects.get(pk=created.key.pk)
    assert created.secret.startswith("atl-") and len(created.secret) > 40
    assert created.secret not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert key.hashed == keys.hash_key(created.secret) and created.secret.startswith(key.prefix)
    client = Client()
    for _ in range(2):
        assert api(client, "get", "/v1/models", created.secret).status_code == 200
    keys.revoke(key, alice)
    actions = list(
        AuditEntry.objects.filter(target_id=str(key.pk)).values_list("action", flat=True)
    )
    assert sorted(actions) == ["api_key.created", "api_key.first_use", "api_key.revoked"]
    key.refresh_from_db()
    assert key.last_used_at is not None and key.state == "revoked"


def test_bearer_and_x_api_key_both_authenticate(secret: str, chat_model: ModelEntry) -> None:
    client = Client()
    by_bearer = api(client, "get", "/v1/models", secret)
    by_header = api(client, "get", "/v1/models", None, HTTP_X_API_KEY=secret)
    assert by_bearer.status_code == by_header.status_code == 200
    assert [m["id"] for m in by_bearer.json()["data"]] == ["tiny-llama"]
    assert by_bearer.json()["data"][0]["object"] == "model"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "missing_api_key"),
        ("wrong", "invalid_api_key"),
        ("revoked", "revoked_api_key"),
        ("expired", "expired_api_key"),
    ],
)
def test_a_missing_unknown_revoked_or_expired_key_is_401(alice: Any, case: str, code: str) -> None:
    created = keys.create_key(alice, "k")
    secret: str | None = created.secret
    if case == "missing":
        secret = None
    elif case == "wrong":
        secret = created.secret[:-3] + "xyz"
    elif case == "revoked":
        keys.revoke(created.key, alice)
    else:
        ApiKey.objects.filter(pk=created.key.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    error = error_of(api(Client(), "get", "/v1/models", secret), 401)
    assert error["code"] == code and error["type"] == "authentication_error"
    if case == "expired":  # recorded once, however often it is tried
        api(Client(), "get", "/v1/models", secret)
        assert AuditEntry.objects.filter(action="api_key.expired").count() == 1


def test_pending_and_suspended_accounts_keys_are_refused_with_the_reason(
    make_user: Any, alice: Any
) -> None:
    pending = make_user("pat", role="pending")
    pending_key = keys.create_key(pending, "k").secret
    error = error_of(api(Client(), "get", "/v1/models", pending_key), 403)
    assert error["code"] == "account_pending" and "approval" in error["message"]
    alice_key = keys.create_key(alice, "k").secret
    moderation.suspend(alice, "Repeated threats.")
    error = error_of(api(Client(), "get", "/v1/models", alice_key), 403)
    assert error["code"] == "account_suspended" and "Repeated threats." in error["message"]


def test_groups_decide_who_may_have_keys(alice: Any, make_user: Any) -> None:
    interns = Group.objects.create(name="interns")
    alice.groups.add(interns)
    assert keys.may_have_keys(alice)
    existing = keys.create_key(alice, "before").secret
    GroupKeyAccess.objects.create(group=interns, may_have_keys=False)
    with pytest.raises(keys.KeyActionError, match="may not have API keys"):
        keys.create_key(alice, "after")
    error = error_of(api(Client(), "get", "/v1/models", existing), 403)
    assert error["code"] == "api_keys_not_allowed"
    assert keys.may_have_keys(make_user("root", role="admin"))
    with override_settings(ATELIER_API_KEYS_FOR_EVERYONE=False):
        assert not keys.may_have_keys(make_user("carol"))


def test_the_keys_page_shows_a_new_key_once_and_revokes_it(alice: Any, bob: Any) -> None:
    client = Client()
    client.force_login(alice)
    page = client.post("/api-keys/", {"name": "script", "expires_in": "30"})
    assert page.status_code == 200
    secret = page.context["secret"]
    assert secret and secret in page.content.decode()
    key = ApiKey.objects.get(user=alice)
    assert key.expires_at is not None and key.expires_at > timezone.now() + timedelta(days=29)
    listing = client.get("/api-keys/").content.decode()
    assert secret not in listing and key.prefix in listing
    assert client.post("/api-keys/", {"name": ""}).status_code == 400
    other = Client()
    other.force_login(bob)
    assert other.post(f"/api-keys/{key.pk}/revoke/").status_code == 404  # not bob's
    assert client.post(f"/api-keys/{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    assert key.state == "revoked"
    assert Client().get("/api-keys/").status_code == 302  # visitors log in first


def test_admins_see_and_revoke_everyones_keys(alice: Any, make_user: Any) -> None:
    key = keys.create_key(alice, "k").key
    admin = make_user("root", role="admin")
    client = Client()
    client.force_login(admin)
    page = client.get("/api-keys/")
    assert key.prefix in page.content.decode() and "alice" in page.content.decode()
    assert client.post(f"/api-keys/{key.pk}/revoke/").status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_by == admin


# --- Errors -------------------------------------------------------------------------------


def test_unknown_urls_and_methods_answer_json_never_html(secret: str) -> None:
    client = Client()
    error = error_of(api(client, "get", "/v1/nothing/here", secret), 404)
    assert error["code"] == "unknown_url"
    error = error_of(api(client, "delete", "/v1/chat/completions", secret), 405)
    assert error["code"] == "method_not_allowed"
    error_of(api(client, "get", "/v1/nothing", None), 404)


def test_models_list_only_what_the_user_may_use(
    alice: Any, secret: str, chat_model: ModelEntry
) -> None:
    staff = Group.objects.create(name="staff")
    private = ModelEntry.objects.create(name="private", task="chat", source="x", queue=DIRECT_QUEUE)
    private.allowed_groups.add(staff)
    ModelEntry.objects.create(name="off", task="chat", source="x", enabled=False)
    client = Client()
    names = [m["id"] for m in api(client, "get", "/v1/models", secret).json()["data"]]
    assert names == ["tiny-llama"]
    assert api(client, "get", "/v1/models/tiny-llama", secret).json()["id"] == "tiny-llama"
    error_of(api(client, "get", "/v1/models/private", secret), 404)
    # Asked for by name, a model of someone else's group is 403, a missing one 404.
    body = {"model": "private", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        error_of(api(client, "post", "/v1/chat/completions", secret, body), 403)["code"]
        == "model_not_allowed"
    )
    body["model"] = "nope"
    assert (
        error_of(api(client, "post", "/v1/chat/completions", secret, body), 404)["code"]
        == "model_not_found"
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "tiny-llama", "messages": []}, "messages"),
        (
            {"model": "tiny-llama", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                    }
                ],
            },
            "messages[0].content",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 3,
            },
            "temperature",
        ),
        ({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "n": 5}, "n"),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "stop": ["a", "b", "c", "d", "e"],
            },
            "stop",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 0,
            },
            "max_tokens",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function"}],
            },
            "tools",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "frobnicate": 1,
            },
            "frobnicate",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": True},
            },
            "stream_options",
        ),
    ],
)
def test_a_bad_field_is_400_naming_it(
    secret: str, chat_model: ModelEntry, body: dict[str, Any], param: str
) -> None:
    error = error_of(api(Client(), "post", "/v1/chat/completions", secret, body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not Generation.objects.exists()


def test_a_body_that_is_not_json_or_too_large_is_refused(
    secret: str, chat_model: ModelEntry
) -> None:
    client = Client()
    assert (
        error_of(api(client, "post", "/v1/chat/completions", secret, b"{nope"), 400)["code"]
        == "invalid_json"
    )
    with override_settings(ATELIER_API_MAX_BODY_BYTES=100):
        big = {"model": "tiny-llama", "messages": [{"role": "user", "content": "x" * 200}]}
        assert (
            error_of(api(client, "post", "/v1/chat/completions", secret, big), 413)["code"]
            == "request_too_large"
        )


def test_no_worker_for_the_model_is_503_and_queues_nothing(
    secret: str, chat_model: ModelEntry
) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    error = error_of(api(Client(), "post", "/v1/chat/completions", secret, body), 503)
    assert error["code"] == "model_not_served" and not Generation.objects.exists()


def test_the_limit_of_requests_in_progress_is_429_with_retry_after(
    alice: Any, secret: str, chat_model: ModelEntry, worker_alive: None
) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "n": 3}
    response = api(Client(), "post", "/v1/chat/completions", secret, body)
    error = error_of(response, 429)  # n=3 is three requests; the limit is two
    assert error["code"] == "limit_reached" and int(response["Retry-After"]) > 0
    assert not Generation.objects.exists()  # all of them or none


def test_a_blocked_prompt_answers_content_filter_and_is_kept_for_review(
    alice: Any, secret: str, chat_model: ModelEntry, worker_alive: None
) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "I will kill you"}]}
    response = api(Client(), "post", "/v1/chat/completions", secret, body)
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "Blocked by the content policy (violence)" in choice["message"]["content"]
    assert not Generation.objects.exists()
    assert ModerationEvent.objects.get(user=alice).text == "I will kill you"
    stream = api(Client(), "post", "/v1/chat/completions", secret, {**body, "stream": True})
    text = async_to_sync(_collect)(stream.streaming_content).decode()
    assert '"finish_reason":"content_filter"' in text and text.endswith("data: [DONE]\n\n")


def test_a_chat_request_is_a_generation_like_any_other(
    alice: Any, secret: str, chat_model: ModelEntry, worker_alive: None
) -> None:
    """What reaches the road: the system prompt, the turns, the sampling fields; n choices
    with seeds one apart. (The live tests follow it to its answer.)"""
    from webapp.api import schemas, services

    parsed = schemas.parse_chat(
        {
            "model": "tiny-llama",
            "n": 2,
            "seed": 7,
            "stop": "\n",
            "max_completion_tokens": 9,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "end-user-1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            ],
        },
        max_chars=1000,
        max_system_chars=1000,
        default_max_tokens=64,
    )
    submitted = services.submit_chat(alice, parsed, "/v1/chat/completions")
    first, second = (Generation.objects.get(pk=g.pk) for g in submitted.generations)
    assert first.input == {
        "system": "Be brief.",
        "end_user": "end-user-1",
        "messages": [{"role": "user", "content": "Hello"}],
    }
    asked = {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 9, "stop": ["\n"], "seed": 7}
    assert {name: first.params[name] for name in asked} == asked
    assert second.params["seed"] == 8 and first.status == second.status == Status.QUEUED
    assert first.queue == DIRECT_QUEUE and first.task == "chat"


def test_the_studio_endpoints_refuse_as_the_pages_do(
    alice: Any, secret: str, worker_alive: None
) -> None:
    ModelEntry.objects.create(
        name="tiny-translator", task="translate", source="x", queue=DIRECT_QUEUE
    )
    client = Client()
    unknown = api(
        client, "post", "/v1/atelier/translate", secret, {"text": "Good morning", "target": "xx"}
    )
    assert "Choose the language" in error_of(unknown, 400)["message"]
    same = api(
        client,
        "post",
        "/v1/atelier/translate",
        secret,
        {"text": "Good morning", "target": "en", "source": "en"},
    )
    assert "both English" in error_of(same, 400)["message"]
    blocked = api(
        client, "post", "/v1/atelier/translate", secret, {"text": "I will kill you", "target": "fr"}
    )
    assert error_of(blocked, 400)["code"] == "content_policy_violation"
    no_image = api(client, "post", "/v1/atelier/classify", secret, {})
    assert error_of(no_image, 400)["param"] == "image"
    wrong_task = api(
        client,
        "post",
        "/v1/atelier/summarize",
        secret,
        {"text": "Hello", "model": "tiny-translator"},
    )
    assert error_of(wrong_task, 400)["code"] == "model_not_supported"
    assert not Generation.objects.exists()
