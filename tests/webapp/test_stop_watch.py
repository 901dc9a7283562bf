"""StopWatch: a running generation hears its stop from a subscription, not by asking
Redis at every decoding step; a stop requested before it started is seen too."""

from __future__ import annotations

import threading
import time

from webapp.inference import streams


def wait_for(check: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_stop_requested_while_running_is_heard_and_only_by_its_generation() -> None:
    watch, other = streams.StopWatch(910001), streams.StopWatch(910002)
    try:
        assert not watch() and not other()
        streams.request_stop(910001)
        assert wait_for(watch)
        assert not other()
    finally:
        watch.close()
        other.close()


def test_a_stop_requested_before_the_watch_started_is_seen_at_once() -> None:
    streams.request_stop(910003)
    watch = streams.StopWatch(910003)
    try:
        assert watch()
    finally:
        watch.close()


def test_closing_ends_the_listening_thread() -> None:
    watch = streams.StopWatch(910004)
    watch.close()
    assert wait_for(lambda: not watch._thread.is_alive(), streams.LISTEN_SECONDS + 5)
    names = [t.name for t in threading.enumerate()]
    assert "stop-watch-910004" not in names


def test_without_a_subscription_every_call_reads_the_flag() -> None:
    watch = streams.StopWatch(910005)
    watch.close()
    wait_for(lambda: not watch._thread.is_alive(), streams.LISTEN_SECONDS + 5)
    watch._broken = True  # as after Redis went away under the subscription
    assert not watch()
    streams.sync_redis().set(streams.stop_key(910005), 1, ex=60)  # the flag alone, no message
    assert watch()
