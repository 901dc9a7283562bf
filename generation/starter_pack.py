"""The starter pack: every offline model Atelier prepares on first start, and the catalog
entries each one serves (one set of weights may serve several tasks: SmolLM2 is the chat
model, the default summarizer and a weak translator, loaded once by a worker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generation.rnn.starter import SHAKESPEARE_GRU_FOLDER, prepare_rnn
from generation.rnn.train import ProgressCallback
from generation.specs import Backend, Quantization, Task
from generation.starter import (
    PreparedModel,
    prepare_efficientnet_lite0,
    prepare_minilm,
    prepare_smollm2,
)


@dataclass(frozen=True)
class Registration:
    """A catalog entry for a prepared folder."""

    name: str
    task: Task
    description: str
    backend: Backend = Backend.TRANSFORMERS
    quantization: Quantization = Quantization.NONE
    default: bool = True  # the task's default, unless an admin has chosen another
    # Catalog fields a new entry starts with (admins may change them), e.g. sampling
    # defaults: catalog field name -> value.
    fields: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class StarterModel:
    key: str
    prepare: Callable[[Path, ProgressCallback | None], PreparedModel]
    registrations: tuple[Registration, ...]
    # Minutes to prepare (training): the run command prepares it in the background, its
    # entries registered meanwhile as being prepared in `folder` (under the models dir).
    slow: bool = False
    folder: str = ""


SMOLLM2 = "SmolLM2-135M-Instruct"
STARTER_PACK: tuple[StarterModel, ...] = (
    StarterModel(
        "smollm2",
        lambda folder, progress: prepare_smollm2(folder),
        (
            Registration(
                SMOLLM2,
                Task.CHAT,
                "Small instruction-tuned chat model (135M parameters), int8 on CPU.",
                quantization=Quantization.INT8_DYNAMIC,
                # Its model card's sampling, and a penalty: at 135M it repeats itself.
                fields=(
                    ("default_temperature", 0.2),
                    ("default_top_p", 0.9),
                    ("default_repetition_penalty", 1.1),
                ),
            ),
            Registration(
                f"{SMOLLM2} (summaries)",
                Task.SUMMARIZE,
                "SmolLM2 asked for a summary. A small model: it may paraphrase rather than "
                "condense, and can get facts wrong; long texts are summarized part by part.",
                quantization=Quantization.INT8_DYNAMIC,
            ),
            Registration(
                f"{SMOLLM2} (weak translator)",
                Task.TRANSLATE,
                "Weak: a 135M chat model asked to translate, since no translation weights "
                "can be had offline. Expect mistakes; add a Marian or NLLB model for real use.",
                quantization=Quantization.INT8_DYNAMIC,
            ),
        ),
    ),
    StarterModel(
        "efficientnet-lite0",
        lambda folder, progress: prepare_efficientnet_lite0(folder),
        (
            Registration(
                "EfficientNet-Lite0",
                Task.CLASSIFY_IMAGE,
                "ImageNet classifier (1,000 labels, 4.7M parameters).",
            ),
        ),
    ),
    StarterModel(
        "minilm",
        lambda folder, progress: prepare_minilm(folder),
        (
            Registration(
                "all-MiniLM-L6-v2",
                Task.EMBED,
                "Sentence embeddings (384 dimensions) for search.",
            ),
        ),
    ),
    StarterModel(
        "shakespeare-gru",
        lambda folder, progress: prepare_rnn(folder, on_progress=progress),
        (
            Registration(
                "Shakespeare GRU",
                Task.CHAT,
                "A character-level GRU trained here on Shakespeare's plays: it continues "
                "your message in his style and follows no instructions. int8 on CPU.",
                backend=Backend.RNN,
                quantization=Quantization.INT8_DYNAMIC,
                default=False,
                fields=(("takes_system_prompt", False),),
            ),
        ),
        slow=True,
        folder=SHAKESPEARE_GRU_FOLDER,
    ),
)
