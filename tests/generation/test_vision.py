"""Image classification on tiny ViT and ResNet models, and safe decoding of uploads."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from generation.images import sniff_format
from generation.loading import LoadedModel, load_image_classifier, load_model
from generation.specs import ModelLoadError, ModelSpec, Quantization, Task
from generation.vision import (
    ImageError,
    ImageLimits,
    LabelScore,
    classify_image,
    decode_image,
    to_rgb,
)
from tests.tiny.models import IMAGE_LABELS, build_tiny_resnet, build_tiny_vit

BUILDERS = {"vit": build_tiny_vit, "resnet": build_tiny_resnet}


@pytest.fixture(scope="module")
def classifier_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        family: build(tmp_path_factory.mktemp(f"tiny-{family}"))
        for family, build in BUILDERS.items()
    }


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def classifier(request: pytest.FixtureRequest, classifier_folders: dict[str, Path]) -> LoadedModel:
    family = request.param
    spec = ModelSpec(
        name=f"tiny-{family}", source=str(classifier_folders[family]), task=Task.CLASSIFY_IMAGE
    )
    return load_image_classifier(spec)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 48, height: int = 40) -> Image.Image:
    """A photo-like image: smooth colour gradients, so every class gets some signal."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            (x * 255 // width, y * 255 // height, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return image


# -- classification ----------------------------------------------------------------------------


def test_loads_through_from_pretrained_with_its_image_processor(classifier: LoadedModel) -> None:
    assert classifier.tokenizer is None
    assert classifier.processor is not None
    assert classifier.model.training is False
    assert classifier.model.config.id2label == dict(enumerate(IMAGE_LABELS))


@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_top_k_labels_are_sorted_probabilities_from_id2label(
    classifier: LoadedModel, top_k: int
) -> None:
    results = classify_image(classifier, gradient(), top_k=top_k)
    assert len(results) == top_k
    assert all(isinstance(r, LabelScore) for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sum(scores) <= 1.0 + 1e-5
    assert [r.label for r in results] == [IMAGE_LABELS[r.index] for r in results]
    assert len({r.index for r in results}) == top_k


def test_all_classes_sum_to_one_and_match_a_manual_softmax(classifier: LoadedModel) -> None:
    image = gradient()
    results = classify_image(classifier, image, top_k=50)  # more than there are classes
    assert len(results) == len(IMAGE_LABELS)
    assert sum(r.score for r in results) == pytest.approx(1.0, abs=1e-5)
    pixels = classifier.processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = torch.softmax(classifier.model(pixel_values=pixels).logits[0], dim=-1)
    for result in results:
        assert result.score == pytest.approx(float(expected[result.index]), abs=1e-6)
    assert results[0].to_dict() == {
        "label": results[0].label,
        "score": results[0].score,
        "index": results[0].index,
    }


def test_classifies_uploaded_bytes_like_the_decoded_image(classifier: LoadedModel) -> None:
    image = gradient()
    data = encode(image, "PNG")
    assert classify_image(classifier, data) == classify_image(classifier, decode_image(data))


def test_top_k_must_be_positive(classifier: LoadedModel) -> None:
    with pytest.raises(ValueError, match="top_k"):
        classify_image(classifier, gradient(), top_k=0)


def test_load_model_dispatches_image_tasks_and_quantizes(
    classifier_folders: dict[str, Path],
) -> None:
    spec = ModelSpec(
        name="tiny-vit-int8",
        source=str(classifier_folders["vit"]),
        task=Task.CLASSIFY_IMAGE,
        quantization=Quantization.INT8_DYNAMIC,
    )
    quantized = load_model(spec)
    plain = load_image_classifier(
        ModelSpec(name="tiny-vit", source=str(classifier_folders["vit"]), task=Task.CLASSIFY_IMAGE)
    )
    assert any("quantized" in type(m).__module__ for m in quantized.model.modules())
    image = gradient()
    got = classify_image(quantized, image, top_k=5)
    expected = classify_image(plain, image, top_k=5)
    # int8 weights move probabilities a little, not a lot.
    by_index = {r.index: r.score for r in expected}
    for result in got:
        assert result.score == pytest.approx(by_index[result.index], abs=0.05)


def test_load_error_names_the_model_for_a_folder_without_weights(
    classifier_folders: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "vit"
    shutil.copytree(classifier_folders["vit"], folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weightless-vit"):
        load_image_classifier(ModelSpec(name="weightless-vit", source=str(folder)))


# -- formats by content ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_every_allowed_format_decodes_to_rgb(fmt: str) -> None:
    data = encode(gradient(), fmt)
    assert sniff_format(data) == fmt
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == (48, 40)


def test_the_file_name_plays_no_part_a_png_named_jpg_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(gradient(), "PNG"))
    assert decode_image(path.read_bytes()).size == (48, 40)


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is a text file and not a picture\n",
        b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        b"%PDF-1.4 not an image",
    ],
)
def test_a_text_file_named_png_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="not an image in a supported format"):
        decode_image(path.read_bytes())


def test_a_real_image_in_a_format_outside_the_allow_list_is_rejected() -> None:
    for fmt in ("TIFF", "PPM", "ICO"):
        with pytest.raises(ImageError, match="supported format"):
            decode_image(encode(gradient(), fmt))


def test_magic_bytes_followed_by_garbage_are_rejected() -> None:
    with pytest.raises(ImageError, match="cannot be read as one"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)


def test_an_empty_file_is_rejected() -> None:
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


# -- limits ------------------------------------------------------------------------------------


def png_with_header_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims width x height: a decompression bomb's shape
    (a tiny file announcing billions of pixels)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr_at = data.index(b"IHDR")
    struct.pack_into(">II", data, ihdr_at + 4, width, height)
    crc = zlib.crc32(bytes(data[ihdr_at : ihdr_at + 17]))
    struct.pack_into(">I", data, ihdr_at + 17, crc)
    return bytes(data)


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = png_with_header_size(100_000, 100_000)  # 10 billion pixels in ~70 bytes
    assert len(bomb) < 200
    with pytest.raises(ImageError, match=r"too many pixels|million pixels"):
        decode_image(bomb)


def test_pixel_limit_applies_below_pillows_own() -> None:
    bomb = png_with_header_size(8000, 6000)  # 48 M: under Pillow's limit, over ours
    with pytest.raises(ImageError, match="8000 x 6000 pixels; at most 40 million"):
        decode_image(bomb)
    small = encode(gradient(20, 20), "PNG")
    with pytest.raises(ImageError, match="20 x 20 pixels"):
        decode_image(small, ImageLimits(max_pixels=399))
    assert decode_image(small, ImageLimits(max_pixels=400)).size == (20, 20)


def test_byte_limit() -> None:
    data = encode(gradient(), "BMP")
    with pytest.raises(ImageError, match="MB; at most"):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert decode_image(data, ImageLimits(max_bytes=len(data))).mode == "RGB"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_rejected(fmt: str) -> None:
    data = encode(gradient(96, 96), fmt)
    with pytest.raises(ImageError, match="damaged or cut short"):
        decode_image(data[: len(data) * 2 // 3])


# -- orientation and colour modes --------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide and 20 high: left half red, right half blue. Orientation 6 means
    # "rotate 90 degrees clockwise to display", which puts the left half on top.
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert image.size == (20, 40)
    top = image.getpixel((10, 5))
    bottom = image.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # red
    assert bottom[2] > 200 and bottom[0] < 60  # blue


def test_rgba_is_flattened_over_white() -> None:
    image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent
    image.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    decoded = decode_image(encode(image, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((3, 1)) == (255, 255, 255)


def test_grayscale_and_grayscale_with_alpha_become_rgb() -> None:
    assert decode_image(encode(Image.new("L", (3, 3), 77), "PNG")).getpixel((1, 1)) == (77,) * 3
    la = Image.new("LA", (3, 3), (77, 255))
    assert decode_image(encode(la, "PNG")).getpixel((1, 1)) == (77,) * 3


def test_palette_with_transparency_becomes_rgb() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    decoded = decode_image(encode(image, "PNG", transparency=0))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((1, 1)) == (0, 255, 0)
    assert decoded.getpixel((0, 0)) == (255, 255, 255)  # the transparent index


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    image = Image.new("I;16", (2, 1))
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 0)
    decoded = decode_image(encode(image, "PNG"))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 0)) == (0, 0, 0)


def test_cmyk_converts_too() -> None:
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixel = decode_image(data).getpixel((4, 4))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200 and pixel[2] < 60
