"""Fixtures for the generation library tests: tiny random-weight models built once per run.

generation/ is a pure inference library, so nothing here touches Django, Celery or a database.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation.loading import LoadedModel, load_causal_lm
from generation.specs import ModelSpec, Quantization
from tests.tiny.causal import build_tiny_causal_lm

LoadTiny = Callable[..., LoadedModel]


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("gen-tiny-llama"), family="llama")


@pytest.fixture(scope="session")
def tiny_gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("gen-tiny-gpt2"), family="gpt2")


@pytest.fixture(scope="session")
def tiny_folders(tiny_llama_folder: Path, tiny_gpt2_folder: Path) -> dict[str, Path]:
    return {"llama": tiny_llama_folder, "gpt2": tiny_gpt2_folder}


@pytest.fixture(scope="session")
def load_tiny(tiny_folders: dict[str, Path]) -> LoadTiny:
    """Load a tiny model afresh (for tests that change the model or its tokenizer)."""

    def load(family: str, quantization: Quantization = Quantization.NONE) -> LoadedModel:
        spec = ModelSpec(
            name=f"tiny-{family}", source=str(tiny_folders[family]), quantization=quantization
        )
        return load_causal_lm(spec)

    return load


@pytest.fixture(scope="session")
def llama(load_tiny: LoadTiny) -> LoadedModel:
    """A shared, unquantized tiny Llama: tests must not modify it."""
    return load_tiny("llama")


@pytest.fixture(scope="session")
def gpt2(load_tiny: LoadTiny) -> LoadedModel:
    """A shared, unquantized tiny GPT-2: tests must not modify it."""
    return load_tiny("gpt2")


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest, llama: LoadedModel, gpt2: LoadedModel) -> LoadedModel:
    """Each shared tiny model in turn."""
    return {"llama": llama, "gpt2": gpt2}[request.param]
