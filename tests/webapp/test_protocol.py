import json

import pytest
from django.test import override_settings

from webapp.chat.protocol import (
    ProtocolError,
    SendMessage,
    Stop,
    Subscribe,
    parse_client_message,
    parse_frame,
)


def error_code(text: str | None = None, data: bytes | None = None) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(parse_frame(text, data))
    return caught.value.code


def test_valid_messages_parse() -> None:
    send = parse_client_message(
        {"type": "message", "content": "hi", "temperature": 0, "max_tokens": 5}
    )
    assert isinstance(send, SendMessage)
    # Only what the frame sets: the front door fills the rest from the model's defaults.
    assert send.params == {"temperature": 0.0, "max_new_tokens": 5}
    assert send.conversation is None and send.model is None
    assert parse_client_message({"type": "subscribe", "generation": 3, "after": 7}) == Subscribe(
        3, 7
    )
    assert parse_client_message({"type": "stop", "generation": 3}) == Stop(3)
    with_stops = parse_client_message({"type": "message", "content": "hi", "stop": ["###"]})
    assert isinstance(with_stops, SendMessage) and with_stops.params == {"stop": ["###"]}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"content": "no type"}', "unknown_type"),
        ('{"type": "message", "content": "   "}', "bad_field"),
        ('{"type": "message", "content": 5}', "bad_field"),
        ('{"type": "message", "content": "x", "temperature": 9}', "out_of_range"),
        ('{"type": "message", "content": "x", "temperature": "hot"}', "bad_field"),
        ('{"type": "message", "content": "x", "max_tokens": 0}', "out_of_range"),
        ('{"type": "message", "content": "x", "max_tokens": 100000}', "out_of_range"),
        ('{"type": "message", "content": "x", "max_tokens": 1.5}', "bad_field"),
        ('{"type": "message", "content": "x", "top_p": 0}', "out_of_range"),
        ('{"type": "message", "content": "x", "seed": -1}', "bad_field"),
        ('{"type": "message", "content": "x", "conversation": "1"}', "bad_field"),
        ('{"type": "message", "content": "x", "conversation": true}', "bad_field"),
        ('{"type": "message", "content": "x", "model": -4}', "bad_field"),
        ('{"type": "subscribe", "generation": 1, "after": -1}', "bad_field"),
        ('{"type": "subscribe"}', "bad_field"),
        ('{"type": "stop", "generation": 0}', "bad_field"),
        ('{"type": "message", "content": "nul \\u0000 inside"}', "bad_field"),
        ('{"type": "message", "content": "x", "system": "nul \\u0000"}', "bad_field"),
        ('{"type": "message", "content": "x", "stop": "##"}', "bad_field"),
        ('{"type": "message", "content": "x", "stop": ["a", 1]}', "bad_field"),
        ('{"type": "message", "content": "x", "temprature": 1}', "unknown_field"),
        ('{"type": "stop", "generation": 1, "now": true}', "unknown_field"),
    ],
)
def test_bad_frames_get_a_clear_code(frame: str, code: str) -> None:
    assert error_code(frame) == code


def test_binary_frames_are_refused() -> None:
    assert error_code(data=b"\x00\x01") == "binary_frame"


@override_settings(ATELIER_MAX_FRAME_BYTES=100)
def test_oversized_frames_are_refused_before_parsing() -> None:
    assert error_code(json.dumps({"type": "message", "content": "x" * 200})) == "frame_too_large"


@override_settings(ATELIER_MAX_MESSAGE_CHARS=10)
def test_too_long_message_names_the_limit() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message({"type": "message", "content": "x" * 11})
    assert caught.value.code == "too_long"
    assert "10" in caught.value.message
