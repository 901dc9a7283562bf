"""Load a model and its tokenizer from a spec, on the right device, quantized as asked."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generation.quantization import apply_int8_dynamic, bnb_config
from generation.specs import Backend, Device, ModelLoadError, ModelSpec, Quantization

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer
    device: torch.device
    load_seconds: float

    @property
    def context_length(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048


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


def looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


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


def load_causal_lm(spec: ModelSpec) -> LoadedModel:
    """Load a causal language model and tokenizer; raise ModelLoadError with a clear cause."""
    if spec.backend is not Backend.TRANSFORMERS:
        raise ModelLoadError(
            f"model {spec.name!r}: backend {spec.backend.value!r} cannot serve chat yet"
        )
    device = resolve_device(spec)
    _check_combination(spec, device)
    source = spec.source
    if looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model {spec.name!r}: folder {source} does not exist")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"model {spec.name!r}: {source} has no config.json")
        source = str(folder)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _float_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.quantization in (Quantization.BNB_8BIT, Quantization.BNB_4BIT):
        kwargs["quantization_config"] = bnb_config(spec.quantization, dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}

    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
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
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    elapsed = time.perf_counter() - started
    log.info(
        "loaded model %r (%s, %s) in %.2fs", spec.name, spec.quantization.value, device, elapsed
    )
    return LoadedModel(
        spec=spec, model=model, tokenizer=tokenizer, device=device, load_seconds=elapsed
    )
