"""An RNN model folder (config.json, model.safetensors, vocab.json): save it, check it, load it.

`load_rnn(spec)` is the RNN counterpart of `generation.loading.load_causal_lm`: every way a
folder can be wrong (missing files, corrupt weights, weights that do not fit the config, a
vocabulary of the wrong size) becomes a `ModelLoadError` that names the model and the cause.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation.loading import resolve_device
from generation.quantization import apply_int8_dynamic
from generation.rnn.model import CharRNN, RNNConfig
from generation.rnn.vocab import CharVocab
from generation.specs import Backend, Device, ModelLoadError, ModelSpec, Quantization

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE)


@dataclass
class LoadedRNN:
    spec: ModelSpec
    model: CharRNN  # or its int8 dynamic quantized copy
    vocab: CharVocab
    device: torch.device
    load_seconds: float
    config: RNNConfig
    training: dict[str, Any] = field(default_factory=dict)  # metrics saved by train_rnn
    batcher: Any = None  # a generation.rnn.batching.RNNBatcher when requests batch


def save_rnn_folder(
    folder: Path, model: CharRNN, vocab: CharVocab, training: dict[str, Any] | None = None
) -> Path:
    """Write the three files of a model folder; `training` (metrics) goes into config.json.

    Each file is written under a temporary name and renamed, so a folder being rewritten
    never holds a half-written file.
    """
    from safetensors.torch import save_file

    if len(vocab) != model.config.vocab_size:
        raise ValueError(
            f"the vocabulary has {len(vocab)} entries, the model {model.config.vocab_size}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_json()
    if training is not None:
        config["training"] = training
    _replace(folder / WEIGHTS_FILE, lambda tmp: save_file(weights, str(tmp)))
    _replace(folder / VOCAB_FILE, vocab.save)
    _replace(
        folder / CONFIG_FILE,
        lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    return folder


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.chmod(0o644)  # safetensors creates its file readable by its owner only
    os.replace(tmp, path)


def read_rnn_folder(folder: Path, name: str = "model") -> tuple[CharRNN, CharVocab, dict[str, Any]]:
    """The float model (in eval mode, on the CPU), its vocabulary and its training metrics."""

    def fail(cause: str) -> ModelLoadError:
        return ModelLoadError(f"model {name!r} could not be loaded from {folder}: {cause}")

    if not folder.is_dir():
        raise ModelLoadError(f"model {name!r}: folder {folder} does not exist")
    missing = [file for file in FOLDER_FILES if not (folder / file).is_file()]
    if missing:
        raise fail(f"the folder has no {', '.join(missing)}")
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config = RNNConfig.from_json(raw)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise fail(f"{CONFIG_FILE} is not a valid RNN config ({exc})") from exc
    try:
        vocab = CharVocab.load(folder / VOCAB_FILE)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise fail(f"{VOCAB_FILE} is not a valid vocabulary ({exc})") from exc
    if len(vocab) != config.vocab_size:
        raise fail(
            f"{VOCAB_FILE} has {len(vocab)} entries but {CONFIG_FILE} says "
            f"vocab_size {config.vocab_size}"
        )
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own error type for a corrupt file
        raise fail(
            f"{WEIGHTS_FILE} is corrupt or unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    model = CharRNN(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:  # missing or unexpected keys, shape mismatches
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:4])
        raise fail(f"{WEIGHTS_FILE} does not match {CONFIG_FILE} ({detail})") from exc
    model.eval()
    training = raw.get("training")
    return model, vocab, training if isinstance(training, dict) else {}


def load_rnn(spec: ModelSpec) -> LoadedRNN:
    """Load an RNN model folder for a spec, quantized int8 dynamic when asked.

    int8_dynamic runs on the CPU only: with device "auto" it picks the CPU, with "cuda" it is
    refused. bitsandbytes modes are for transformers models and are refused here.
    """
    if spec.backend is not Backend.RNN:
        raise ModelLoadError(f"model {spec.name!r}: backend {spec.backend.value!r} is not 'rnn'")
    if spec.quantization not in (Quantization.NONE, Quantization.INT8_DYNAMIC):
        raise ModelLoadError(
            f"model {spec.name!r}: RNN models support quantization 'none' or 'int8_dynamic', "
            f"not {spec.quantization.value!r}"
        )
    int8 = spec.quantization is Quantization.INT8_DYNAMIC
    device = torch.device("cpu") if int8 and spec.device is Device.AUTO else resolve_device(spec)
    if int8 and device.type != "cpu":
        raise ModelLoadError(
            f"model {spec.name!r}: int8_dynamic quantization runs on CPU only; "
            "use device cpu (or auto) or quantization none"
        )
    started = time.perf_counter()
    model, vocab, training = read_rnn_folder(Path(spec.source).expanduser(), spec.name)
    model.to(device)
    if int8:
        apply_int8_dynamic(model)  # in place: its GRU/LSTM and Linear children are swapped
    elapsed = time.perf_counter() - started
    log.info("loaded RNN model %r (%s, %s) in %.2fs", spec.name, spec.quantization, device, elapsed)
    return LoadedRNN(
        spec=spec,
        model=model,
        vocab=vocab,
        device=device,
        load_seconds=elapsed,
        config=model.config,
        training=training,
    )
