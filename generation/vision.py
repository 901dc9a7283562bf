"""Image classification: safe decoding of uploaded bytes, then top-k labels with
probabilities from an AutoModelForImageClassification and its image processor.

Uploads are untrusted: the format is told from the content (never the file name) and
checked against an allow-list, size and pixel count are limited before any pixel is
decoded (decompression bombs), truncated files are refused, EXIF orientation is applied,
and every colour mode becomes RGB.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from typing import Any

import torch

from generation.images import FORMAT_NAMES, MAX_PIXELS, sniff_format
from generation.loading import LoadedModel
from generation.specs import GenerationError

log = logging.getLogger(__name__)


class ImageError(GenerationError):
    """An uploaded image was refused; the message can be shown to the user as it is."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    # Below Pillow's own bomb threshold (Image.MAX_IMAGE_PIXELS, ~89 M): ours is checked
    # first, so Pillow's warning never fires for an image we accept.
    max_pixels: int = MAX_PIXELS


def decode_image(data: bytes, limits: ImageLimits | None = None) -> Any:
    """An RGB PIL image from untrusted bytes, or ImageError saying why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = limits or ImageLimits()
    if not data:
        raise ImageError("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"the image file is {len(data) / 1e6:.1f} MB; at most "
            f"{limits.max_bytes / 1e6:.0f} MB is accepted"
        )
    kind = sniff_format(data)
    if kind is None:
        raise ImageError(f"the file is not an image in a supported format ({FORMAT_NAMES})")
    try:
        # Only the sniffed format's decoder may read it: no other plugin gets a chance.
        image: Any = Image.open(io.BytesIO(data), formats=[kind])
    except Image.DecompressionBombError as exc:
        raise ImageError("the image has too many pixels to be processed") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(f"the file looks like {kind} but cannot be read as one") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("the image has no pixels")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"the image is {width} x {height} pixels; at most "
            f"{limits.max_pixels / 1e6:.0f} million pixels are accepted"
        )
    try:
        image.seek(0)  # the first frame of an animated GIF or WebP
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageError("the image has too many pixels to be processed") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError("the image file is damaged or cut short") from exc
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: the pixels are fine, keep them as stored
        log.warning("ignoring unreadable EXIF orientation", exc_info=True)
    return to_rgb(image)


def to_rgb(image: Any) -> Any:
    """RGB for any mode: transparency over white, 16/32-bit grey scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0.0
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float  # softmax probability
    index: int  # the class id

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "index": self.index}


def _input_dtype(model: Any) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def classify_image(
    loaded: LoadedModel,
    image: Any,
    top_k: int = 5,
    limits: ImageLimits | None = None,
) -> list[LabelScore]:
    """The top_k labels, most probable first, for an image (PIL image or uploaded bytes)."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if isinstance(image, bytes | bytearray):
        image = decode_image(bytes(image), limits)
    inputs = loaded.processor(images=image, return_tensors="pt")
    pixels = inputs["pixel_values"].to(loaded.device, dtype=_input_dtype(loaded.model))
    with torch.inference_mode():
        logits = loaded.model(pixel_values=pixels).logits[0].float()
    probabilities = torch.softmax(logits, dim=-1)
    scores, indices = torch.topk(probabilities, min(top_k, probabilities.numel()))
    id2label = getattr(loaded.model.config, "id2label", None) or {}
    return [
        LabelScore(label=str(id2label.get(i, f"class {i}")), score=float(s), index=i)
        for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
    ]
