"""What a request to the API asks for, read and checked: pure functions from a JSON body
to a typed request, or an `ApiError` (400) naming the field. No database, no Django."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from generation.specs import MAX_NEW_TOKENS_LIMIT, MAX_STOP_SEQUENCES
from webapp.api.errors import ApiError, bad_field

MAX_CHOICES = 4
MAX_EMBED_INPUTS = 256  # the worker's limit per embeddings request
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions

# Fields accepted only with the value that means "off" (so that clients sending defaults
# work); any other value is refused by name.
NEUTRAL = {
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (None, 0),
    "logit_bias": (None,),
    "tools": (None,),
    "tool_choice": (None, "none"),
    "functions": (None,),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, False),
    "store": (None, False),
    "service_tier": (None, "auto", "default"),
    "echo": (False, None),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
}
IGNORED = ("metadata",)  # accepted and not used


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:  # nested deeper than Python's stack
        raise ApiError(
            400, "The request body is JSON nested too deeply.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


def _check_fields(data: dict[str, Any], honoured: set[str]) -> None:
    for name, value in data.items():
        if name in honoured or name in IGNORED:
            continue
        if name in NEUTRAL:
            if value not in NEUTRAL[name] and value != {}:
                raise ApiError(
                    400,
                    f"'{name}' is not supported by Atelier (only its default is accepted).",
                    code="unsupported_parameter",
                    param=name,
                )
            continue
        raise ApiError(
            400,
            f"Unrecognized request argument supplied: {name}",
            code="unknown_parameter",
            param=name,
        )


def _string(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(
                400, f"'{name}' is required.", code="missing_required_parameter", param=name
            )
        return None
    if not isinstance(value, str) or (required and not value):
        raise bad_field(name, f"'{name}' must be a non-empty string.")
    return value


def _number(data: dict[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_field(name, f"'{name}' must be a number from {low:g} to {high:g}.")
    return float(value)


def _whole(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_field(name, f"'{name}' must be a whole number from {low} to {high}.")
    return value


def _bool(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_field(name, f"'{name}' must be true or false.")
    return value


def _stop(data: dict[str, Any]) -> list[str]:
    value = data.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise bad_field(
            "stop", f"'stop' must be a string or a list of up to {MAX_STOP_SEQUENCES} strings."
        )
    return list(stops)


@dataclass(frozen=True)
class Sampling:
    """Sampling fields shared by chat and completions, as the worker's params."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]
    seed: int | None
    n: int

    def params(self, choice: int) -> dict[str, Any]:
        """The generation's params for choice `choice` (0-based): with a seed, choice i
        samples with seed + i, so the choices differ and each is reproducible."""
        seed = None if self.seed is None else self.seed + choice
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": seed,
        }


SAMPLING_FIELDS = {"temperature", "top_p", "max_tokens", "stop", "seed", "n", "user"}


def _sampling(data: dict[str, Any], default_max_tokens: int) -> Sampling:
    max_tokens = _whole(data, "max_tokens", 1, MAX_NEW_TOKENS_LIMIT)
    completion = _whole(data, "max_completion_tokens", 1, MAX_NEW_TOKENS_LIMIT)
    if completion is not None:
        max_tokens = completion
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_field("seed", "'seed' must be a whole number.")
    if seed is not None and not 0 <= seed < 2**32:
        raise bad_field("seed", "'seed' must be from 0 to 4294967295.")
    return Sampling(
        temperature=_number(data, "temperature", 0, 2, 1.0),
        top_p=_number(data, "top_p", 0.000001, 1, 1.0),
        max_tokens=max_tokens or default_max_tokens,
        stop=_stop(data),
        seed=seed,
        n=_whole(data, "n", 1, MAX_CHOICES) or 1,
    )


def _include_usage(data: dict[str, Any], stream: bool) -> bool:
    options = data.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad_field("stream_options", "'stream_options' is only allowed with 'stream': true.")
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise bad_field("stream_options", "'stream_options' takes only 'include_usage'.")
    return _bool(options, "include_usage")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: str
    messages: list[dict[str, str]]  # the worker's turns: role user or assistant
    sampling: Sampling
    stream: bool
    include_usage: bool
    user: str | None
    raw: bool = False  # /v1/completions: the prompt continued as it is, no chat template

    def input(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"system": self.system, "messages": self.messages}
        if self.raw:  # the worker continues the text itself (handlers.chat)
            payload = {"prompt": self.messages[0]["content"]}
        if self.user:
            payload["end_user"] = self.user  # who the client says it acts for, for the record
        return payload

    def screened_texts(self) -> list[tuple[str, str, str]]:
        """(text, task, context) of what is checked on the way in: the latest user message
        (answering the reply before it) and the system prompt."""
        found: list[tuple[str, str, str]] = []
        users = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        if users:
            last = users[-1]
            context = self.messages[last - 1]["content"] if last else ""
            found.append((self.messages[last]["content"], "chat", context))
        if self.system:
            found.append((self.system, "chat:system", ""))
        return found


def _content(message: dict[str, Any], index: int) -> str:
    param = f"messages[{index}].content"
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad_field(
                    param,
                    f"'{param}' parts must be text parts; Atelier's chat models read text only.",
                )
            if not isinstance(part.get("text"), str):
                raise bad_field(param, f"'{param}' has a text part without 'text'.")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_field(param, f"'{param}' must be a string or a list of text parts.")


def parse_chat(
    data: dict[str, Any], *, max_chars: int, max_system_chars: int, default_max_tokens: int
) -> ChatRequest:
    _check_fields(
        data,
        {"model", "messages", "stream", "stream_options", "max_completion_tokens"}
        | SAMPLING_FIELDS,
    )
    model = _string(data, "model", required=True)
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400, "'messages' must be a non-empty list.", code="invalid_value", param="messages"
        )
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad_field(f"messages[{index}]", f"'messages[{index}]' must be an object.")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad_field(
                f"messages[{index}].role",
                f"'messages[{index}].role' must be system, developer, user or assistant "
                "(Atelier has no tools).",
            )
        text = _content(message, index)
        if len(text) > max_chars:
            raise bad_field(
                f"messages[{index}].content",
                f"'messages[{index}].content' is longer than {max_chars} characters.",
            )
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": str(role), "content": text})
    if not any(turn["role"] == "user" for turn in turns):
        raise bad_field("messages", "'messages' must hold at least one user message.")
    system_prompt = "\n\n".join(system)
    if len(system_prompt) > max_system_chars:
        raise bad_field(
            "messages", f"The system prompt is longer than {max_system_chars} characters."
        )
    stream = _bool(data, "stream")
    return ChatRequest(
        model=str(model),
        system=system_prompt,
        messages=turns,
        sampling=_sampling(data, default_max_tokens),
        stream=stream,
        include_usage=_include_usage(data, stream),
        user=_string(data, "user"),
    )


def parse_completion(data: dict[str, Any], *, max_chars: int) -> ChatRequest:
    """A /v1/completions request, as a chat request of one user message (see docs/api.md:
    the worker runs chat models through their chat template)."""
    _check_fields(data, {"model", "prompt", "stream", "stream_options"} | SAMPLING_FIELDS)
    model = _string(data, "model", required=True)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise bad_field("prompt", "'prompt' must be one string (use 'n' for several choices).")
    if not isinstance(prompt, str) or not prompt:
        raise bad_field("prompt", "'prompt' must be a non-empty string.")
    if len(prompt) > max_chars:
        raise bad_field("prompt", f"'prompt' is longer than {max_chars} characters.")
    stream = _bool(data, "stream")
    return ChatRequest(
        model=str(model),
        system="",
        messages=[{"role": "user", "content": prompt}],
        sampling=_sampling(data, DEFAULT_COMPLETION_MAX_TOKENS),
        stream=stream,
        include_usage=_include_usage(data, stream),
        user=_string(data, "user"),
        raw=True,
    )


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    texts: list[str]
    encoding_format: str = "float"
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_embeddings(data: dict[str, Any], *, max_chars: int) -> EmbeddingsRequest:
    _check_fields(data, {"model", "input", "encoding_format", "user", "dimensions"})
    model = _string(data, "model", required=True)
    raw = data.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(texts, list)
        or not texts
        or len(texts) > MAX_EMBED_INPUTS
        or not all(isinstance(t, str) and t for t in texts)
    ):
        raise bad_field(
            "input",
            f"'input' must be a non-empty string or a list of 1 to {MAX_EMBED_INPUTS} "
            "non-empty strings (token arrays are not accepted).",
        )
    if any(len(t) > max_chars for t in texts):
        raise bad_field("input", f"Each input is at most {max_chars} characters.")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_field("encoding_format", "'encoding_format' must be 'float' or 'base64'.")
    if data.get("dimensions") is not None:
        raise ApiError(
            400,
            "'dimensions' is not supported: the model's own size is used.",
            code="unsupported_parameter",
            param="dimensions",
        )
    return EmbeddingsRequest(
        model=str(model), texts=list(texts), encoding_format=encoding, user=_string(data, "user")
    )


@dataclass(frozen=True)
class ModerationRequest:
    texts: list[str]
    model: str | None


def parse_moderation(data: dict[str, Any], *, max_chars: int) -> ModerationRequest:
    _check_fields(data, {"input", "model"})
    raw = data.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or len(items) > MAX_EMBED_INPUTS:
        raise bad_field(
            "input",
            f"'input' must be a string or a list of 1 to {MAX_EMBED_INPUTS} strings or text parts.",
        )
    texts = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "text":
            item = item.get("text")
        if not isinstance(item, str):
            raise bad_field("input", "'input' takes text only (Atelier moderates no images).")
        if len(item) > max_chars:
            raise bad_field("input", f"Each input is at most {max_chars} characters.")
        texts.append(item)
    return ModerationRequest(texts=texts, model=_string(data, "model"))
