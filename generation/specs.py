"""What a model is (a spec from the catalog) and how to run it (sampling parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Task(StrEnum):
    CHAT = "chat"
    SUMMARIZE = "summarize"
    TRANSLATE = "translate"
    CLASSIFY_IMAGE = "classify_image"
    MODERATION = "moderation"
    EMBED = "embed"


class SummaryLength(StrEnum):
    """A summary's length preset (generation.summarize says what each asks of a model)."""

    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


class Backend(StrEnum):
    TRANSFORMERS = "transformers"
    RNN = "rnn"


class Quantization(StrEnum):
    NONE = "none"
    BNB_8BIT = "bnb_8bit"
    BNB_4BIT = "bnb_4bit"
    INT8_DYNAMIC = "int8_dynamic"


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the model and the cause."""


class GenerationError(Exception):
    """A request could not be run on a loaded model (e.g. no chat template)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # a hub id, or a local folder
    task: Task = Task.CHAT
    backend: Backend = Backend.TRANSFORMERS
    quantization: Quantization = Quantization.NONE
    device: Device = Device.AUTO

    def __post_init__(self) -> None:
        # Accept plain strings (e.g. from JSON) and fail early on unknown values.
        kinds = {"task": Task, "backend": Backend, "quantization": Quantization, "device": Device}
        for name, kind in kinds.items():
            object.__setattr__(self, name, kind(getattr(self, name)))


# Limits that validation in the web app and the library share.
MAX_NEW_TOKENS_LIMIT = 4096
MAX_STOP_SEQUENCES = 4
REPETITION_PENALTY_RANGE = (1.0, 2.0)  # 1.0: none; above 2 a model avoids every word it used


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters. temperature == 0 means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        low, high = REPETITION_PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:
            raise ValueError(f"repetition_penalty must be between {low:g} and {high:g}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be greater than 0 and at most 1")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}")
        if len(self.stop) > MAX_STOP_SEQUENCES or any(not s for s in self.stop):
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} non-empty stop sequences")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """From JSON (as stored on a Generation); unknown keys are an error."""
        values = dict(data)
        stop = values.get("stop", ())
        if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
            raise ValueError("stop must be a list of strings")
        values["stop"] = tuple(stop)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["stop"] = list(self.stop)
        return values


def looks_like_path(source: str) -> bool:
    """A model source that names a local folder (rather than a hub id)."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
