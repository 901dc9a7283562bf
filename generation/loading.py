"""Load a model and its tokenizer (or image processor) from a spec, on the right device,
quantized as asked. One path for every task, so each fails with the same clear errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generation.quantization import apply_int8_dynamic, bnb_config
from generation.specs import (
    Backend,
    Device,
    ModelLoadError,
    ModelSpec,
    Quantization,
    Task,
    looks_like_path,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer (None for image classifiers)
    device: torch.device
    load_seconds: float
    processor: Any = None  # the image processor of an image classifier
    # A generation.batching.Batcher when the worker decodes this model's requests
    # together (set by whoever holds the model; streams opened through
    # generation.batching.open_stream then join its batch).
    batcher: Any = None

    @property
    def context_length(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(spec: ModelSpec) -> torch.device:
    if spec.device is Device.CUDA:
        if not cuda_available():
            raise ModelLoadError(
                f"model {spec.name!r} asks for device cuda, but no CUDA GPU is available"
            )
        return torch.device("cuda")
    if spec.device is Device.CPU:
        return torch.device("cpu")
    return torch.device("cuda" if cuda_available() else "cpu")


def _check_combination(spec: ModelSpec, device: torch.device) -> None:
    if spec.quantization is Quantization.INT8_DYNAMIC and device.type != "cpu":
        raise ModelLoadError(
            f"model {spec.name!r}: int8_dynamic quantization runs on CPU only; "
            "use bnb_8bit or bnb_4bit on cuda"
        )
    if spec.quantization in (Quantization.BNB_8BIT, Quantization.BNB_4BIT):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError(f"model {spec.name!r}: bitsandbytes is not installed") from exc
        if device.type == "cpu":
            log.warning(
                "model %r: bitsandbytes on CPU works but is slower than int8_dynamic", spec.name
            )


def _float_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _resolve_source(spec: ModelSpec) -> str:
    """The hub id as given, or the local folder after checking it holds a model."""
    source = spec.source
    if looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model {spec.name!r}: folder {source} does not exist")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"model {spec.name!r}: {source} has no config.json")
        source = str(folder)
    return source


def _load_pretrained(
    spec: ModelSpec,
    purpose: str,
    load_model: Callable[[str, dict[str, Any]], Any],
    load_companion: Callable[[str], Any],
) -> LoadedModel:
    """The shared path: checks, from_pretrained for the model and its companion (tokenizer
    or image processor), device placement, eval mode and quantization.

    `purpose` names what the model is loaded for, in the error for a non-transformers spec.
    The companion ends up in `tokenizer`; callers move it where it belongs.
    """
    if spec.backend is not Backend.TRANSFORMERS:
        raise ModelLoadError(
            f"model {spec.name!r}: backend {spec.backend.value!r} cannot serve {purpose} yet"
        )
    device = resolve_device(spec)
    _check_combination(spec, device)
    source = _resolve_source(spec)

    dtype = _float_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.quantization in (Quantization.BNB_8BIT, Quantization.BNB_4BIT):
        kwargs["quantization_config"] = bnb_config(spec.quantization, dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}

    started = time.perf_counter()
    try:
        companion = load_companion(source)
        model: Any = load_model(source, kwargs)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
        raise ModelLoadError(f"model {spec.name!r}: out of GPU memory while loading") from exc
    except Exception as exc:  # corrupt weights, unknown architecture, bad config, ...
        cause = f"{type(exc).__name__}: {exc}"
        raise ModelLoadError(
            f"model {spec.name!r} could not be loaded from {spec.source}: {cause}"
        ) from exc

    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    if spec.quantization is Quantization.INT8_DYNAMIC:
        model = apply_int8_dynamic(model)
    elapsed = time.perf_counter() - started
    log.info(
        "loaded model %r (%s, %s) in %.2fs", spec.name, spec.quantization.value, device, elapsed
    )
    return LoadedModel(
        spec=spec, model=model, tokenizer=companion, device=device, load_seconds=elapsed
    )


def _tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def _with_pad_token(loaded: LoadedModel) -> LoadedModel:
    if loaded.tokenizer.pad_token_id is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return loaded


def load_causal_lm(spec: ModelSpec) -> LoadedModel:
    """Load a causal language model and tokenizer; raise ModelLoadError with a clear cause."""
    from transformers import AutoModelForCausalLM

    def model(source: str, kwargs: dict[str, Any]) -> Any:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)

    return _with_pad_token(_load_pretrained(spec, "chat", model, _tokenizer))


def load_seq2seq_lm(spec: ModelSpec) -> LoadedModel:
    """Load an encoder-decoder model (T5, BART, Pegasus, Marian, M2M100, NLLB) and tokenizer."""
    from transformers import AutoModelForSeq2SeqLM

    def model(source: str, kwargs: dict[str, Any]) -> Any:
        return AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs)

    return _with_pad_token(_load_pretrained(spec, spec.task.value, model, _tokenizer))


def load_image_classifier(spec: ModelSpec) -> LoadedModel:
    """Load an image classifier and its image processor (in `processor`; no tokenizer)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    def model(source: str, kwargs: dict[str, Any]) -> Any:
        return AutoModelForImageClassification.from_pretrained(source, **kwargs)

    def processor(source: str) -> Any:
        return AutoImageProcessor.from_pretrained(source)

    loaded = _load_pretrained(spec, "image classification", model, processor)
    loaded.processor, loaded.tokenizer = loaded.tokenizer, None
    return loaded


def load_text_encoder(spec: ModelSpec) -> LoadedModel:
    """Load a BERT-style encoder (no head) and tokenizer, for sentence embeddings."""
    from transformers import AutoModel

    def model(source: str, kwargs: dict[str, Any]) -> Any:
        return AutoModel.from_pretrained(source, **kwargs)

    return _load_pretrained(spec, "embeddings", model, _tokenizer)


def load_text_classifier(spec: ModelSpec) -> LoadedModel:
    """Load a text-classification model (e.g. a toxicity classifier) and tokenizer."""
    from transformers import AutoModelForSequenceClassification

    def model(source: str, kwargs: dict[str, Any]) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(source, **kwargs)

    return _load_pretrained(spec, "text classification", model, _tokenizer)


def _read_config(spec: ModelSpec) -> Any:
    """The spec's model config, read without the weights."""
    from transformers import AutoConfig

    source = _resolve_source(spec)
    try:
        return AutoConfig.from_pretrained(source)
    except Exception as exc:
        cause = f"{type(exc).__name__}: {exc}"
        raise ModelLoadError(
            f"model {spec.name!r} could not be loaded from {spec.source}: {cause}"
        ) from exc


def is_encoder_decoder_source(spec: ModelSpec) -> bool:
    """Whether the spec's config describes an encoder-decoder model (read without weights)."""
    return bool(getattr(_read_config(spec), "is_encoder_decoder", False))


def is_sequence_classifier_source(spec: ModelSpec) -> bool:
    """Whether the spec's config names a text-classification architecture (e.g.
    BertForSequenceClassification), as opposed to a language model."""
    architectures = getattr(_read_config(spec), "architectures", None) or []
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load whatever the spec's task needs: summaries and translations come from a seq2seq
    model when the config is encoder-decoder, and from a chat model through a prompt
    otherwise; image classification and embeddings have their own model classes."""
    if spec.task is Task.CLASSIFY_IMAGE:
        return load_image_classifier(spec)
    if spec.task is Task.EMBED:
        return load_text_encoder(spec)
    if (
        spec.task in (Task.SUMMARIZE, Task.TRANSLATE)
        and spec.backend is Backend.TRANSFORMERS
        and is_encoder_decoder_source(spec)
    ):
        return load_seq2seq_lm(spec)
    if (
        spec.task is Task.MODERATION
        and spec.backend is Backend.TRANSFORMERS
        and is_sequence_classifier_source(spec)
    ):
        return load_text_classifier(spec)
    return load_causal_lm(spec)  # chat, or a generative safety model
