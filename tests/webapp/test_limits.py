"""Oversized and hostile WebSocket frames against a real web server (Daphne started as the
run command starts it, through webapp.server): every frame gets an answer a client can act
on, the `frame_too_large` error or a close with code 1009, never a reset.

One web process for the module and no worker: nothing here reaches a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.processes import session_cookie, web_server
from webapp.server import transport_limit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KIB, MIB = 1024, 1024 * 1024
MESSAGE_TOO_BIG = 1009


@pytest.fixture(scope="module")
def web(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with web_server(test_db_env, tmp_path_factory.mktemp("limits") / "web.log") as url:
        yield url


def chat_socket(url: str, user: Any) -> ClientConnection:
    return connect(
        url.replace("http", "ws") + "/ws/chat/",
        origin=url,  # type: ignore[arg-type]
        additional_headers={"Cookie": session_cookie(user)},
        proxy=None,
        max_size=None,
    )


@pytest.fixture
def socket(web: str, alice: Any) -> Iterator[ClientConnection]:
    with chat_socket(web, alice) as connection:
        yield connection


def frame_of(size: int) -> str:
    """A `message` frame of exactly `size` bytes."""
    empty = json.dumps({"type": "message", "content": ""})
    return json.dumps({"type": "message", "content": "x" * (size - len(empty))})


def answer(socket: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(socket.recv(timeout=30))
    return event


def assert_usable(socket: ClientConnection) -> None:
    """The connection still answers: a subscription to no generation is `not_found`."""
    socket.send(json.dumps({"type": "subscribe", "generation": 10**7, "after": 0}))
    assert answer(socket)["code"] == "not_found"


def closed_with(socket: ClientConnection, frame: str) -> int | None:
    """Send the frame; the close code the server answered with (None: no close frame)."""
    try:
        socket.send(frame)
        while True:
            socket.recv(timeout=30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_the_transport_reads_what_the_setting_allows_and_a_little_more() -> None:
    limit = settings.ATELIER_MAX_FRAME_BYTES
    assert limit < 300 * KIB < transport_limit(limit) < int(1.1 * MIB)


def test_a_frame_at_the_limit_is_read_and_one_of_300_kib_is_frame_too_large(
    socket: ClientConnection,
) -> None:
    socket.send(frame_of(settings.ATELIER_MAX_FRAME_BYTES))
    assert answer(socket)["code"] == "too_long"  # read and parsed: the content is too long
    socket.send(frame_of(300 * KIB))
    event = answer(socket)
    assert event["type"] == "error" and event["code"] == "frame_too_large"
    assert str(settings.ATELIER_MAX_FRAME_BYTES) in event["message"]
    assert_usable(socket)


@pytest.mark.parametrize("size", [int(1.1 * MIB), 5 * MIB])
def test_a_far_larger_frame_is_refused_with_close_1009_not_a_reset(
    socket: ClientConnection, size: int
) -> None:
    assert closed_with(socket, frame_of(size)) == MESSAGE_TOO_BIG


def test_the_transport_limit_follows_a_larger_setting(
    test_db_env: dict[str, str], alice: Any, tmp_path: Path
) -> None:
    """With ATELIER_MAX_FRAME_BYTES at 2 MiB, a frame over Daphne's own 1 MiB is read."""
    env = {**test_db_env, "ATELIER_MAX_FRAME_BYTES": str(2 * MIB)}
    with web_server(env, tmp_path / "web.log") as url, chat_socket(url, alice) as socket:
        socket.send(frame_of(int(1.1 * MIB)))
        assert answer(socket)["code"] == "too_long"  # read: only the content is too long
        socket.send(frame_of(2 * MIB + 1))
        event = answer(socket)
        assert event["code"] == "frame_too_large" and str(2 * MIB) in event["message"]
        assert closed_with(socket, frame_of(8 * MIB + 1)) == MESSAGE_TOO_BIG


def test_a_json_nesting_bomb_is_bad_json(socket: ClientConnection) -> None:
    socket.send("[" * 100_000 + "]" * 100_000)
    assert answer(socket)["code"] == "bad_json"
    socket.send('{"type": "message", "content": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert answer(socket)["code"] in {"bad_json", "bad_field"}
    assert_usable(socket)


def test_the_other_sockets_answer_hostile_frames_and_stay_open(web: str, alice: Any) -> None:
    """The job progress socket takes no messages and a result's socket only `stop`: junk,
    a nesting bomb or a binary frame is answered with their error, never a crash."""
    from webapp.inference.models import Generation
    from webapp.jobs.models import Job, JobItem

    # Paused with an item waiting, so that its socket stays open (a finished job's closes).
    job = Job.objects.create(user=alice, task="summarize", source_name="t.txt", status="paused")
    JobItem.objects.create(job=job, index=0, external_id="1", text="x")
    generation = Generation.objects.create(user=alice, task="summarize", input={"text": "x"})
    sockets = {f"/ws/jobs/{job.pk}/": "bad_request", f"/ws/generations/{generation.pk}/": ""}
    for path, code in sockets.items():
        with connect(
            web.replace("http", "ws") + path,
            origin=web,  # type: ignore[arg-type]
            additional_headers={"Cookie": session_cookie(alice)},
            proxy=None,
        ) as connection:
            for frame in ("{not json", "[" * 100_000, b"\x00binary", "[" * 100_000):
                connection.send(frame)
                event = answer(connection)
                while event["type"] != "error":  # progress or queue events come first
                    event = answer(connection)
                assert event["code"] == (code or "unknown_type"), (path, event)
