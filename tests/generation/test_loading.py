"""load_causal_lm: a successful load, and ModelLoadError naming the model for each cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import generation.loading as loading
from generation.loading import LoadedModel, load_causal_lm
from generation.specs import (
    Backend,
    Device,
    ModelLoadError,
    ModelSpec,
    Quantization,
    looks_like_path,
)


def test_load_gives_an_eval_model_on_cpu_with_a_pad_token(tiny_folders: dict[str, Path]) -> None:
    for family, folder in tiny_folders.items():
        loaded = load_causal_lm(ModelSpec(name=f"tiny-{family}", source=str(folder)))
        assert isinstance(loaded, LoadedModel)
        assert loaded.device == torch.device("cpu")
        assert loaded.model.training is False
        assert loaded.model.dtype == torch.float32
        assert loaded.tokenizer.pad_token_id is not None
        assert loaded.tokenizer.eos_token == "<|im_end|>"
        assert loaded.context_length == 512
        assert loaded.load_seconds >= 0


def test_load_with_explicit_cpu_device(tiny_llama_folder: Path) -> None:
    spec = ModelSpec(name="tiny", source=str(tiny_llama_folder), device=Device.CPU)
    assert load_causal_lm(spec).device == torch.device("cpu")


def test_looks_like_path() -> None:
    assert looks_like_path("/models/x")
    assert looks_like_path("./x")
    assert looks_like_path("../x")
    assert looks_like_path("~/x")
    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_load_error_for_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_causal_lm(ModelSpec(name="ghost-model", source=str(missing)))
    assert "ghost-model" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_load_error_for_a_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no config\.json") as caught:
        load_causal_lm(ModelSpec(name="configless", source=str(tmp_path)))
    assert "configless" in str(caught.value)


def test_load_error_for_an_unknown_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(ModelLoadError) as caught:
        load_causal_lm(ModelSpec(name="odd-arch", source=str(tmp_path)))
    assert "odd-arch" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_load_error_for_an_unknown_model_type_with_a_valid_tokenizer(
    tiny_llama_folder: Path, tmp_path: Path
) -> None:
    # With a tokenizer that loads, it is the model class lookup that fails.
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_folder, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(ModelLoadError, match="no-such-arch") as caught:
        load_causal_lm(ModelSpec(name="odd-arch", source=str(folder)))
    assert "odd-arch" in str(caught.value)


def test_load_error_for_invalid_config_json(tiny_llama_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_folder, folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="broken-config"):
        load_causal_lm(ModelSpec(name="broken-config", source=str(folder)))


def test_load_error_for_missing_weights(tiny_llama_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_folder, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weightless"):
        load_causal_lm(ModelSpec(name="weightless", source=str(folder)))


def test_load_error_for_corrupt_weights(tiny_llama_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_folder, folder)
    (folder / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelLoadError, match="corrupt-model"):
        load_causal_lm(ModelSpec(name="corrupt-model", source=str(folder)))


def test_load_error_for_an_unreachable_hub_id_offline() -> None:
    # HF_HUB_OFFLINE=1 (set in conftest): a hub id that is not cached cannot be fetched.
    with pytest.raises(ModelLoadError) as caught:
        load_causal_lm(ModelSpec(name="hub-model", source="no-such-org/no-such-model-xyz"))
    assert "hub-model" in str(caught.value)
    assert "no-such-org/no-such-model-xyz" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_error_for_cuda_without_a_gpu(tiny_llama_folder: Path) -> None:
    spec = ModelSpec(name="gpu-model", source=str(tiny_llama_folder), device=Device.CUDA)
    with pytest.raises(ModelLoadError, match="no CUDA GPU") as caught:
        load_causal_lm(spec)
    assert "gpu-model" in str(caught.value)


@pytest.mark.parametrize("device", [Device.CUDA, Device.AUTO])
def test_load_error_for_int8_dynamic_on_cuda(
    tiny_llama_folder: Path, monkeypatch: pytest.MonkeyPatch, device: Device
) -> None:
    monkeypatch.setattr(loading, "cuda_available", lambda: True)
    spec = ModelSpec(
        name="int8-on-gpu",
        source=str(tiny_llama_folder),
        quantization=Quantization.INT8_DYNAMIC,
        device=device,
    )
    with pytest.raises(ModelLoadError, match="CPU only") as caught:
        load_causal_lm(spec)
    assert "int8-on-gpu" in str(caught.value)
    assert "int8_dynamic" in str(caught.value)


def test_int8_dynamic_on_cpu_is_accepted_when_auto_resolves_to_cpu(
    tiny_llama_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "cuda_available", lambda: False)
    spec = ModelSpec(
        name="int8", source=str(tiny_llama_folder), quantization=Quantization.INT8_DYNAMIC
    )
    assert load_causal_lm(spec).device == torch.device("cpu")


def test_load_refuses_the_rnn_backend(tiny_llama_folder: Path) -> None:
    spec = ModelSpec(name="recurrent", source=str(tiny_llama_folder), backend=Backend.RNN)
    with pytest.raises(ModelLoadError, match="backend 'rnn' cannot serve chat") as caught:
        load_causal_lm(spec)
    assert "recurrent" in str(caught.value)


def test_context_length_falls_back_when_the_config_has_none(llama: LoadedModel) -> None:
    class Config:
        max_position_embeddings = None

    class Model:
        config = Config()

    other = LoadedModel(
        spec=llama.spec,
        model=Model(),
        tokenizer=llama.tokenizer,
        device=llama.device,
        load_seconds=0.0,
    )
    assert other.context_length == 2048
