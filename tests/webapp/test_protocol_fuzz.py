"""A property-based (Hypothesis) fuzz of the chat WebSocket protocol.

Properties, for every invalid frame: the client gets exactly one `error` event whose code
says what was wrong (a documented code other than `server_error`/`stream_error`, which mean
the server failed rather than the client), with no traceback text; the connection stays
open and usable (a subscription to one of the user's finished replies is answered at once);
and no row or stream key is created or changed.

Frames go through channels' WebsocketCommunicator to the real ChatConsumer, with a real
user, the test database and Redis. Each example opens a connection of its own inside
async_to_sync, so the consumer's database calls run on the test's thread and connection.
The expected codes come from docs/protocol.md, not from the parser under test.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, Phase, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.catalog.models import ModelEntry
from webapp.chat import services
from webapp.chat.consumers import ChatConsumer
from webapp.chat.models import Conversation, Message
from webapp.inference.models import Generation, Status
from webapp.inference.streams import sync_redis

pytestmark = pytest.mark.django_db(transaction=True)

# Hypothesis caches (constants, unicode tables) go to the system's temp folder, not the repo.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "atelier-hypothesis")

FUZZ = hypothesis_settings(
    max_examples=50,
    deadline=None,
    database=None,  # nothing written into the repository
    # No shrinking: it replays a failure hundreds of times, and the assertion already
    # names the frame that failed and the event it got.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the world is shared by examples on purpose
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)

DOCUMENTED_CODES = frozenset(
    {
        "bad_json", "bad_frame", "binary_frame", "frame_too_large", "unknown_type",
        "unknown_field", "bad_field", "out_of_range", "too_long", "not_allowed", "not_found",
        "limit_reached", "bad_request", "stream_error", "server_error",
    }
)  # fmt: skip
# An invalid frame is the client's mistake: the answer must say which, not that the server broke.
CLEAR_CODES = DOCUMENTED_CODES - {"server_error", "stream_error"}
TRACEBACK_MARKS = ("Traceback", 'File "')

BAD_FIELD = frozenset({"bad_field"})
OUT_OF_RANGE = frozenset({"out_of_range"})
NOT_FOUND = frozenset({"not_found"})
TOO_LONG = frozenset({"too_long"})

PARAMS = ("model", "temperature", "top_p", "max_tokens", "seed", "stop")
ALLOWED_FIELDS = {  # as docs/protocol.md and the issue describe the client messages
    "message": {"type", "content", "conversation", "system", *PARAMS},
    "regenerate": {"type", "message", *PARAMS},
    "edit": {"type", "message", "content", "system", *PARAMS},
    "subscribe": {"type", "generation", "after"},
    "stop": {"type", "generation"},
}
KINDS = sorted(ALLOWED_FIELDS)
UNUSED_ID = 10**7  # no row of a test gets an id this high


@dataclass(frozen=True)
class World:
    """The fuzzing user's own data, and ids that are not theirs to use."""

    user: Any
    conversation: int
    user_message: int
    reply: int  # the assistant's (finished) reply to user_message
    generation: int  # the reply's generation: subscribing to it is answered from the database
    reply_text: str
    queued: int  # a generation of the user's still waiting for a worker
    foreign: dict[str, list[int]]  # per id kind: another user's ids, or models not for this user


@dataclass(frozen=True)
class Case:
    frame: str | bytes
    codes: frozenset[str]  # the codes a correct server may answer this frame with


@pytest.fixture(autouse=True)
def quick_password_hashing() -> Iterator[None]:
    """The default hasher costs about a second per user on a busy test machine."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def world(alice: Any, bob: Any, chat_model: Any) -> World:
    mine = services.post_message(
        alice, content="Alice asks", conversation_id=None, model_id=None, system=None,
        params=SamplingParams(),
    )  # fmt: skip
    generation_id = mine.assistant_message.generation_id
    assert generation_id is not None
    Generation.objects.filter(pk=generation_id).update(
        status=Status.DONE, output="Alice's answer", finished_at=timezone.now()
    )
    waiting = services.post_message(
        alice, content="Alice waits", conversation_id=None, model_id=None, system=None,
        params=SamplingParams(),
    )  # fmt: skip
    theirs = services.post_message(
        bob, content="Bob asks", conversation_id=None, model_id=None, system=None,
        params=SamplingParams(),
    )  # fmt: skip
    staff = Group.objects.create(name="staff")
    restricted = ModelEntry.objects.create(
        name="staff-only", task="chat", source=chat_model.source, queue=DIRECT_QUEUE
    )
    restricted.allowed_groups.add(staff)
    disabled = ModelEntry.objects.create(
        name="disabled", task="chat", source=chat_model.source, queue=DIRECT_QUEUE, enabled=False
    )
    summarizer = ModelEntry.objects.create(
        name="summarizer", task="summarize", source=chat_model.source, queue=DIRECT_QUEUE
    )
    foreign = {
        "conversation": [theirs.conversation.pk],
        "message": [theirs.user_message.pk, theirs.assistant_message.pk],
        "generation": [theirs.assistant_message.generation_id or 0],
        "model": [restricted.pk, disabled.pk, summarizer.pk],
    }
    assert max(max(ids) for ids in foreign.values()) < UNUSED_ID
    return World(
        user=alice,
        conversation=mine.conversation.pk,
        user_message=mine.user_message.pk,
        reply=mine.assistant_message.pk,
        generation=generation_id,
        reply_text="Alice's answer",
        queued=waiting.assistant_message.generation_id or 0,
        foreign=foreign,
    )


def base_frame(kind: str, world: World) -> dict[str, Any]:
    """A valid frame of this kind that names the world's own objects."""
    return {
        "message": {"type": "message", "content": "Hello", "conversation": world.conversation},
        "regenerate": {"type": "regenerate", "message": world.reply},
        "edit": {"type": "edit", "message": world.user_message, "content": "Hello again"},
        "subscribe": {"type": "subscribe", "generation": world.queued, "after": 0},
        "stop": {"type": "stop", "generation": world.queued},
    }[kind]


def snapshot() -> tuple[list[Any], ...]:
    """Every row a frame could create or change, and this run's Redis keys."""
    return (
        list(
            Conversation.objects.order_by("pk").values_list(
                "pk",
                "user_id",
                "title",
                "system_prompt",
                "current_leaf_id",
                "model_id",
                "updated_at",
            )
        ),
        list(
            Message.objects.order_by("pk").values_list(
                "pk", "conversation_id", "parent_id", "role", "content", "generation_id"
            )
        ),
        list(
            Generation.objects.order_by("pk").values_list(
                "pk", "user_id", "status", "output", "params", "finished_at"
            )
        ),
        sorted(sync_redis().scan_iter(match=f"{settings.ATELIER_REDIS_PREFIX}:*")),
    )


def exchange(
    world: World, frames: list[str | bytes]
) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """On a new connection: each frame and the one event it gets, then a subscription to
    the world's finished reply. Returns (replies, the subscription's first event, whether
    nothing more arrived)."""

    async def talk() -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
        communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
        communicator.scope["user"] = world.user
        connected, _ = await communicator.connect()
        assert connected
        try:
            replies = []
            for frame in frames:
                # send_input, not send_to: empty frames are frames too.
                key = "bytes" if isinstance(frame, bytes) else "text"
                await communicator.send_input({"type": "websocket.receive", key: frame})
                replies.append(await communicator.receive_json_from(timeout=5))
            await communicator.send_json_to({"type": "subscribe", "generation": world.generation})
            answer = await communicator.receive_json_from(timeout=5)
            quiet = await communicator.receive_nothing(timeout=0.02)
        finally:
            await communicator.disconnect()
        return replies, answer, quiet

    return async_to_sync(talk)()


def check_refused(world: World, cases: list[Case]) -> None:
    before = snapshot()
    replies, answer, quiet = exchange(world, [case.frame for case in cases])
    for case, reply in zip(cases, replies, strict=True):
        shown = repr(case.frame[:300])
        assert reply.get("type") == "error", (shown, reply)
        assert set(reply) == {"type", "code", "message"}, (shown, reply)
        assert reply["code"] in case.codes, (shown, reply, sorted(case.codes))
        assert isinstance(reply["message"], str) and reply["message"].strip(), (shown, reply)
        sent = case.frame if isinstance(case.frame, str) else ""
        leaked = [m for m in TRACEBACK_MARKS if m in reply["message"] and m not in sent]
        assert not leaked, (shown, reply)  # (an error may quote the client's own text)
    # Still open and usable; no event of an earlier frame came in between.
    assert answer["type"] == "done", answer
    assert answer["generation"] == world.generation and answer["text"] == world.reply_text
    assert quiet, "an event arrived after the subscription's done"
    assert snapshot() == before, "an invalid frame created or changed something"


# --- JSON values --------------------------------------------------------------------------

huge_ints = st.one_of(
    st.integers(min_value=2**31),
    st.integers(max_value=-(2**31)),
    st.builds(
        lambda digits, sign: sign * 10**digits, st.integers(19, 400), st.sampled_from([1, -1])
    ),
    # Past 64 bits (the database's ids) and past what a float can hold.
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**309, -(10**309), 2**1100]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
not_none = json_values.filter(lambda v: v is not None)
not_int = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
not_number = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))
not_text = json_values.filter(lambda v: not isinstance(v, str))
visible_chars = st.characters(exclude_categories=["Cs", "Cc", "Z"])
blank = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u3000", max_size=10)
with_nul = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=10), st.text(max_size=10))

MISSING = object()  # a corruption that removes the field


def _valued(values: st.SearchStrategy[Any], codes: frozenset[str]) -> st.SearchStrategy[Any]:
    return values.map(lambda value: (value, codes))


def _outside(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], bool]:
    def outside(value: Any) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return True
        return value < low or value > high or (low_open and value == low)

    return outside


def id_corruptions(world: World, kind: str, field: str) -> st.SearchStrategy[Any]:
    """Values for an id field that must be refused: wrong type (bad_field), not positive
    (bad_field), or an id that is not the user's (not_found)."""
    required = field in ("message", "generation")
    wrong = not_int.filter(lambda v: v is not None)
    if required:
        wrong = wrong | st.sampled_from([None, MISSING])
    foreign = world.foreign["message" if field == "message" else field]
    options = [
        _valued(wrong | st.integers(max_value=0), BAD_FIELD),
        _valued(
            st.sampled_from(foreign)
            | st.integers(min_value=UNUSED_ID)
            | huge_ints.filter(lambda i: i > 0),
            NOT_FOUND,
        ),
    ]
    if kind == "regenerate" and field == "message":  # a user message cannot be regenerated
        options.append(st.just((world.user_message, frozenset({"bad_request"}))))
    if kind == "edit" and field == "message":  # a reply cannot be edited
        options.append(st.just((world.reply, frozenset({"bad_request"}))))
    return st.one_of(options)


def field_corruptions(world: World, kind: str, field: str) -> st.SearchStrategy[Any]:
    """(value, expected codes) pairs that make this field of this kind invalid."""
    if field in ("conversation", "model", "message", "generation"):
        return id_corruptions(world, kind, field)
    if field == "content":
        too_long = st.builds(
            lambda char, extra: char * (settings.ATELIER_MAX_MESSAGE_CHARS + extra),
            visible_chars,
            st.integers(1, 50),
        )
        return _valued(not_text | st.just(MISSING) | blank | with_nul, BAD_FIELD) | _valued(
            too_long, TOO_LONG
        )
    if field == "system":
        too_long = st.builds(
            lambda char, extra: char * (settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS + extra),
            visible_chars,
            st.integers(1, 50),
        )
        return _valued(not_text.filter(lambda v: v is not None) | with_nul, BAD_FIELD) | _valued(
            too_long, TOO_LONG
        )
    if field == "temperature":
        out = st.floats().filter(_outside(0, 2)) | st.integers().filter(_outside(0, 2)) | huge_ints
        return _valued(not_number.filter(lambda v: v is not None), BAD_FIELD) | _valued(
            out, OUT_OF_RANGE
        )
    if field == "top_p":
        out = (
            st.floats().filter(_outside(0, 1, low_open=True))
            | st.integers().filter(_outside(0, 1, low_open=True))
            | huge_ints
        )
        return _valued(not_number.filter(lambda v: v is not None), BAD_FIELD) | _valued(
            out, OUT_OF_RANGE
        )
    if field == "max_tokens":
        out = st.integers(max_value=0) | st.integers(min_value=4097) | huge_ints
        return _valued(not_int, BAD_FIELD) | _valued(out, OUT_OF_RANGE)
    if field == "seed":
        out = (
            st.integers(max_value=-1)
            | st.integers(min_value=2**32)
            | huge_ints.filter(lambda i: not 0 <= i < 2**32)  # 2^31..2^32-1 are seeds
        )
        return _valued(not_int.filter(lambda v: v is not None) | out, BAD_FIELD)
    if field == "stop":
        # Stop strings that are fine on their own (NUL is a bad_field of its own).
        words = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=5)
        not_list = json_values.filter(lambda v: not isinstance(v, list))
        with_non_text = st.builds(
            lambda texts, odd, at: [*texts[:at], odd, *texts[at:]],
            st.lists(words, max_size=3),
            not_text,
            st.integers(0, 3),
        )
        too_many = st.lists(words, min_size=5, max_size=8)
        with_empty = st.builds(lambda texts: [*texts, ""], st.lists(words, max_size=3))
        return _valued(not_list | with_non_text, BAD_FIELD) | _valued(
            too_many | with_empty, OUT_OF_RANGE
        )
    if field == "after":  # past 64 bits it cannot be a stream position
        return _valued(not_int | st.integers(max_value=-1), BAD_FIELD) | _valued(
            st.integers(min_value=2**64) | huge_ints.filter(lambda i: i >= 2**64),
            frozenset({"bad_field", "out_of_range"}),
        )
    raise AssertionError(field)


def encode(frame: dict[str, Any], ensure_ascii: bool) -> str:
    return json.dumps(frame, ensure_ascii=ensure_ascii)


def sized(text: str, codes: frozenset[str]) -> Case:
    """Frames over the limit are refused as such before anything else is looked at."""
    if len(text.encode()) > settings.ATELIER_MAX_FRAME_BYTES:
        return Case(text, frozenset({"frame_too_large"}))
    return Case(text, codes)


# --- Frame strategies ---------------------------------------------------------------------


def nested(brackets: str, depth: int) -> str:
    """JSON nested depth levels deep: [[[…]]] or {"a":{"a":…}}."""
    if brackets == "[]":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@st.composite
def mangled_json(draw: st.DrawFn, world: World) -> str:
    """A frame's JSON, cut short or with a stray structural character."""
    text = encode(base_frame(draw(st.sampled_from(KINDS)), world), True)
    at = draw(st.integers(0, len(text) - 1))
    if draw(st.booleans()):
        return text[:at]
    return text[:at] + draw(st.sampled_from(list('{}[]",:\\'))) + text[at:]


@st.composite
def text_frames(draw: st.DrawFn, world: World) -> Case:
    """Text that is not a JSON object: random unicode, broken JSON, JSON scalars/arrays."""
    text = draw(
        st.one_of(
            st.text(max_size=60),
            mangled_json(world),
            st.builds(
                lambda value, pad: pad + json.dumps(value) + pad,
                json_values.filter(lambda v: not isinstance(v, dict)),
                st.sampled_from(["", " ", "\n\t"]),
            ),
            st.builds(nested, st.sampled_from(["[]", "{}"]), st.integers(900, 20_000)),
        )
    )
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than a parser should follow
        return Case(text, frozenset({"bad_json", "bad_frame", "unknown_type"}))
    except ValueError:
        return Case(text, frozenset({"bad_json"}))
    assume(not isinstance(value, dict))
    return Case(text, frozenset({"bad_frame"}))


@st.composite
def binary_frames(draw: st.DrawFn, world: World) -> Case:
    """Any bytes, even a valid frame's JSON: binary frames are refused."""
    data = draw(
        st.binary(max_size=64)
        | st.sampled_from(KINDS).map(lambda kind: encode(base_frame(kind, world), True).encode())
    )
    return Case(data, frozenset({"binary_frame"}))


@st.composite
def unknown_type_frames(draw: st.DrawFn) -> Case:
    """Objects whose type is missing, not a string, or not one of the protocol's."""
    near_misses = st.sampled_from(KINDS).flatmap(
        lambda kind: st.sampled_from(
            [kind.upper(), f" {kind}", f"{kind}\x00", kind[:-1], f"{kind}s"]
        )
    )
    kind = draw(
        st.one_of(
            st.just(MISSING),
            json_values.filter(lambda v: not isinstance(v, str)),
            st.text(max_size=20).filter(lambda t: t not in ALLOWED_FIELDS),
            near_misses,
        )
    )
    frame: dict[str, Any] = draw(
        st.dictionaries(st.text(max_size=10).filter(lambda k: k != "type"), json_values, max_size=4)
    )
    if draw(st.booleans()):  # the fields of a real message, so only the type is wrong
        frame.update({"content": "Hello", "generation": 1, "message": 1})
    if kind is not MISSING:
        frame["type"] = kind
    return sized(encode(frame, draw(st.booleans())), frozenset({"unknown_type"}))


EXTRA = "(an unknown field)"


@st.composite
def corrupted_frames(draw: st.DrawFn, world: World) -> Case:
    """A valid frame of a known type with one to three fields made wrong: wrong types and
    ranges, bools for ints, huge or negative ids, NaN/inf, NUL characters, text over its
    limit, another user's ids, unknown fields. The answer's code must be one of those the
    corruptions call for."""
    kind = draw(st.sampled_from(KINDS))
    frame = base_frame(kind, world)
    fields = draw(
        st.lists(
            st.sampled_from([*sorted(ALLOWED_FIELDS[kind] - {"type"}), EXTRA]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    codes: set[str] = set()
    for field in fields:
        if field == EXTRA:
            key = draw(st.text(max_size=12).filter(lambda k: k not in ALLOWED_FIELDS[kind]))
            frame[key] = draw(json_values)
            codes.add("unknown_field")
            continue
        value, expected = draw(field_corruptions(world, kind, field))
        if value is MISSING:
            frame.pop(field, None)
        else:
            frame[field] = value
        codes |= expected
    return sized(encode(frame, draw(st.booleans())), frozenset(codes))


PADDED = [
    ("message", "content"),
    ("edit", "content"),
    ("message", "system"),
    ("edit", "system"),
    ("stop", EXTRA),
    ("subscribe", EXTRA),
    ("regenerate", EXTRA),
    ("unknown", "type"),
]


@st.composite
def frames_near_the_size_limit(draw: st.DrawFn, world: World) -> Case:
    """A field padded so that the frame is a few bytes under, at or over
    ATELIER_MAX_FRAME_BYTES (or far over), in 1- to 12-byte characters."""
    limit = settings.ATELIER_MAX_FRAME_BYTES
    kind, field = draw(st.sampled_from(PADDED))
    char = draw(st.sampled_from(["x", "é", "€", "😀", "\x00", "\n"]) | visible_chars)
    ensure_ascii = draw(st.booleans())
    target = limit + draw(st.integers(-48, 48) | st.sampled_from([0, 1, limit, 3 * limit]))
    frame = {"type": "unknown"} if kind == "unknown" else base_frame(kind, world)
    key = "padding" if field == EXTRA else field
    frame[key] = ""
    overhead = len(encode(frame, ensure_ascii).encode())
    per_char = len(encode({key: char}, ensure_ascii).encode()) - len(
        encode({key: ""}, True).encode()
    )
    frame[key] = char * max(1, (target - overhead) // per_char)
    text, padding = encode(frame, ensure_ascii), frame[key]
    if field == EXTRA:
        codes = {"unknown_field"}
    elif field == "type":
        codes = {"unknown_type"}
    elif "\x00" in padding or (field == "content" and not padding.strip()):
        codes = {"bad_field"}
    else:  # limits count characters; a frame of 12-byte escapes can be under them
        limit_chars = (
            settings.ATELIER_MAX_MESSAGE_CHARS
            if field == "content"
            else settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS
        )
        if len(text.encode()) <= limit:
            assume(len(padding) > limit_chars)  # else it is a valid message
        codes = {"too_long"}
    return sized(text, frozenset(codes))


@st.composite
def unstorable_text_frames(draw: st.DrawFn, world: World) -> Case:
    """Text fields holding what no database column or JSON document can store: a NUL
    character, or a lone UTF-16 surrogate (sent as a JSON escape, as a client's
    JSON.stringify would). The frame is invalid; it must be refused as such."""
    kind, field = draw(
        st.sampled_from(
            [
                ("message", "content"),
                ("message", "system"),
                ("message", "stop"),
                ("edit", "content"),
                ("edit", "system"),
                ("edit", "stop"),
                ("regenerate", "stop"),
            ]
        )
    )
    bad = draw(st.just("\x00") | st.characters(categories=["Cs"]))
    text = draw(st.text(visible_chars, min_size=1, max_size=8)) + bad + draw(st.text(max_size=8))
    frame = base_frame(kind, world)
    frame[field] = [text] if field == "stop" else text
    codes = {"bad_field"} if bad == "\x00" else {"bad_field", "bad_json"}
    return Case(json.dumps(frame), frozenset(codes))  # ensure_ascii: surrogates as \uXXXX


# --- Edges, every run -----------------------------------------------------------------------
# Hypothesis draws at random; these frames at the edges are sent on every run, one test each.


def _padded_to(size: int) -> str:
    """A message frame whose content makes it exactly `size` bytes long."""
    frame = {"type": "message", "content": ""}
    frame["content"] = "x" * (size - len(json.dumps(frame)))
    return json.dumps(frame)


def _message(**fields: Any) -> Callable[[World], str]:
    return lambda world: json.dumps({"type": "message", "content": "Hello", **fields})


FrameFor = Callable[[World], "str | bytes"]
DEEP = 5000
EDGES: list[tuple[str, FrameFor, set[str]]] = [
    ("empty text frame", lambda w: "", {"bad_json"}),
    ("empty binary frame", lambda w: b"", {"binary_frame"}),
    ("JSON null", lambda w: "null", {"bad_frame"}),
    ("bare NaN", lambda w: "NaN", {"bad_frame"}),
    ("deeply nested array", lambda w: nested("[]", DEEP), {"bad_json", "bad_frame"}),
    ("deeply nested object", lambda w: nested("{}", DEEP), {"bad_json", "unknown_type"}),
    (
        "deeply nested field",
        lambda w: '{"type": "message", "content": "Hello", "stop": ' + nested("[]", DEEP) + "}",
        {"bad_json", "bad_field"},
    ),
    (
        "id past the int parser's digit limit",
        lambda w: '{"type": "stop", "generation": ' + "9" * 5000 + "}",
        {"bad_json", "bad_field", "not_found"},
    ),
    ("temperature past the float range", _message(temperature=10**309), {"out_of_range"}),
    ("top_p past the float range", _message(top_p=-(10**309)), {"out_of_range"}),
    ("temperature NaN", lambda w: _message()(w)[:-1] + ', "temperature": NaN}', {"out_of_range"}),
    ("top_p Infinity", lambda w: _message()(w)[:-1] + ', "top_p": Infinity}', {"out_of_range"}),
    ("max_tokens 1e999", lambda w: _message()(w)[:-1] + ', "max_tokens": 1e999}', {"bad_field"}),
    ("max_tokens true", _message(max_tokens=True), {"bad_field"}),
    ("max_tokens 2**64", _message(max_tokens=2**64), {"out_of_range"}),
    ("seed 2**32", _message(seed=2**32), {"bad_field"}),
    ("conversation 2**63", _message(conversation=2**63), {"not_found"}),
    ("conversation 2**64", _message(conversation=2**64), {"not_found"}),
    ("model 2**63 - 1", _message(model=2**63 - 1), {"not_found"}),
    (
        "regenerate message -(2**63)",
        lambda w: json.dumps({"type": "regenerate", "message": -(2**63)}),
        {"bad_field"},
    ),
    (
        "subscribe after 2**64",
        lambda w: json.dumps({"type": "subscribe", "generation": w.queued, "after": 2**64}),
        {"bad_field", "out_of_range"},
    ),
    ("content with NUL", _message(content="a\x00b"), {"bad_field"}),
    ("stop string with NUL", _message(stop=["\x00"]), {"bad_field"}),
    ("content with a lone surrogate", _message(content="a\ud800"), {"bad_field", "bad_json"}),
    ("system with a lone surrogate", _message(system="\udfff"), {"bad_field", "bad_json"}),
    ("stop with a lone surrogate", _message(stop=["a\ud800"]), {"bad_field", "bad_json"}),
    (
        "edit content with a lone surrogate",
        lambda w: json.dumps({"type": "edit", "message": w.user_message, "content": "\ud800!"}),
        {"bad_field", "bad_json"},
    ),
    (
        "regenerate stop string with NUL",
        lambda w: json.dumps({"type": "regenerate", "message": w.reply, "stop": ["\x00"]}),
        {"bad_field"},
    ),
    (
        "unknown field named by a lone surrogate",
        lambda w: json.dumps({"type": "stop", "generation": w.queued, "\ud800": 1}),
        {"unknown_field"},
    ),
    ("type a lone surrogate", lambda w: json.dumps({"type": "\ud800"}), {"unknown_type"}),
    (
        "frame exactly at the size limit",
        lambda w: _padded_to(settings.ATELIER_MAX_FRAME_BYTES),
        {"too_long"},
    ),
    (
        "frame one byte over the size limit",
        lambda w: _padded_to(settings.ATELIER_MAX_FRAME_BYTES + 1),
        {"frame_too_large"},
    ),
]


def test_edge_frames_are_refused_clearly(world: World) -> None:
    """All edges in one test (a world per edge would cost a second each); every edge that
    fails is listed."""
    failures = []
    for name, frame_for, codes in EDGES:
        try:
            check_refused(world, [Case(frame_for(world), frozenset(codes))])
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(EDGES)} edges failed:\n" + "\n".join(failures)


# --- Properties ---------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_text_that_is_not_a_json_object_gets_bad_json_or_bad_frame(
    world: World, data: st.DataObject
) -> None:
    check_refused(world, data.draw(st.lists(text_frames(world), min_size=1, max_size=3)))


@FUZZ
@given(data=st.data())
def test_binary_frames_are_refused(world: World, data: st.DataObject) -> None:
    check_refused(world, data.draw(st.lists(binary_frames(world), min_size=1, max_size=3)))


@FUZZ
@given(cases=st.lists(unknown_type_frames(), min_size=1, max_size=3))
def test_objects_of_unknown_type_are_refused(world: World, cases: list[Case]) -> None:
    check_refused(world, cases)


@hypothesis_settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_known_messages_with_bad_fields_get_the_fields_error(
    world: World, data: st.DataObject
) -> None:
    check_refused(world, data.draw(st.lists(corrupted_frames(world), min_size=1, max_size=3)))


@FUZZ
@given(data=st.data())
def test_frames_near_and_over_the_size_limit(world: World, data: st.DataObject) -> None:
    check_refused(world, [data.draw(frames_near_the_size_limit(world))])


@FUZZ
@given(data=st.data())
def test_text_that_cannot_be_stored_is_refused_and_nothing_is_stored(
    world: World, data: st.DataObject
) -> None:
    check_refused(world, [data.draw(unstorable_text_frames(world))])
