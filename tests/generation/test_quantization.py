"""Quantization on CPU: dynamic int8 for Llama and GPT-2, Conv1D conversion, bnb configs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import LSTM as DynamicLSTM
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from transformers import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.pytorch_utils import Conv1D

from generation.loading import LoadedModel, load_causal_lm
from generation.prompts import build_chat_input
from generation.quantization import _conv1d_to_linear, apply_int8_dynamic, bnb_config
from generation.specs import ModelSpec, Quantization, SamplingParams
from generation.streaming import TokenStream
from tests.tiny.causal import build_tiny_causal_lm

LoadTiny = Callable[..., LoadedModel]
PROMPT = "The quick brown fox jumps over the lazy dog."


def decoder_layers(loaded: LoadedModel) -> nn.ModuleList:
    model = loaded.model
    return model.model.layers if hasattr(model, "model") else model.transformer.h


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def int8_pair(request: pytest.FixtureRequest, load_tiny: LoadTiny) -> tuple[LoadedModel, ...]:
    """The same tiny model loaded plain and with int8_dynamic."""
    family = request.param
    return load_tiny(family), load_tiny(family, Quantization.INT8_DYNAMIC)


def test_int8_dynamic_leaves_no_float_linear_in_decoder_layers(
    int8_pair: tuple[LoadedModel, LoadedModel],
) -> None:
    plain, quantized = int8_pair
    modules = list(decoder_layers(quantized).modules())
    assert not [m for m in modules if type(m) is nn.Linear]
    assert not [m for m in modules if isinstance(m, Conv1D)]
    dynamic = [m for m in modules if isinstance(m, DynamicLinear)]
    # Every projection of the unquantized layers (Linear or Conv1D) became a dynamic int8 one.
    projections = [m for m in decoder_layers(plain).modules() if isinstance(m, nn.Linear | Conv1D)]
    assert len(dynamic) == len(projections) > 0
    assert all(m.weight().dtype == torch.qint8 for m in dynamic)
    assert isinstance(quantized.model.lm_head, DynamicLinear)


def test_int8_dynamic_converts_gpt2_conv1d_layers(load_tiny: LoadTiny) -> None:
    plain = load_tiny("gpt2")
    block = plain.model.transformer.h[0]
    assert isinstance(block.attn.c_attn, Conv1D)  # GPT-2 really uses Conv1D
    quantized = load_tiny("gpt2", Quantization.INT8_DYNAMIC)
    block = quantized.model.transformer.h[0]
    for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        assert isinstance(layer, DynamicLinear)
    # Conv1D weights are (in, out): the converted layers keep the right orientation.
    assert (block.attn.c_attn.in_features, block.attn.c_attn.out_features) == (32, 96)
    assert (block.mlp.c_fc.in_features, block.mlp.c_fc.out_features) == (32, 128)


def test_int8_dynamic_keeps_the_first_greedy_token(
    int8_pair: tuple[LoadedModel, LoadedModel],
) -> None:
    plain, quantized = int8_pair
    ids = torch.tensor([plain.tokenizer(PROMPT)["input_ids"]])
    with torch.inference_mode():
        plain_logits = plain.model(ids).logits[0, -1]
        quantized_logits = quantized.model(ids).logits[0, -1]
    # int8 weights change the logits only a little ...
    assert torch.allclose(plain_logits, quantized_logits, atol=0.05)
    # ... less than the gap between the top two tokens, so the argmax must agree.
    top2 = plain_logits.topk(2).values
    assert float(top2[0] - top2[1]) > 2 * float((plain_logits - quantized_logits).abs().max())
    assert int(plain_logits.argmax()) == int(quantized_logits.argmax())

    params = SamplingParams(temperature=0.0, max_new_tokens=1)
    prompt = ids[0].tolist()
    first_plain = "".join(TokenStream(plain, prompt, params))
    stream = TokenStream(quantized, prompt, params)
    first_quantized = "".join(stream)
    assert first_quantized == first_plain
    assert stream.stats.completion_tokens == 1


def test_int8_dynamic_model_streams_a_string(
    int8_pair: tuple[LoadedModel, LoadedModel],
) -> None:
    _, quantized = int8_pair
    prompt = quantized.tokenizer(PROMPT)["input_ids"]
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    stream = TokenStream(quantized, prompt, params)
    text = "".join(stream)
    assert isinstance(text, str)
    assert text
    assert stream.stats.finish_reason in ("length", "eos")
    assert 1 <= stream.stats.completion_tokens <= 16


def test_conv1d_to_linear_keeps_a_gpt2_block_output() -> None:
    torch.manual_seed(0)
    block = GPT2Block(GPT2Config(n_embd=32, n_head=4, n_layer=1, n_positions=64))
    with torch.no_grad():  # non-zero biases and weights, so a transposition error shows
        for parameter in block.parameters():
            parameter.normal_(0, 0.3)
    block.eval()
    converted = copy.deepcopy(block)
    _conv1d_to_linear(converted)
    assert not any(isinstance(m, Conv1D) for m in converted.modules())
    assert sum(type(m) is nn.Linear for m in converted.modules()) == 4

    hidden = torch.randn(2, 9, 32)
    with torch.no_grad():
        before = block(hidden)
        after = converted(hidden)
    before = before[0] if isinstance(before, tuple) else before
    after = after[0] if isinstance(after, tuple) else after
    assert before.shape == after.shape == hidden.shape
    assert torch.allclose(before, after, atol=1e-5)


def test_conv1d_to_linear_matches_each_layer_and_ignores_other_modules() -> None:
    torch.manual_seed(1)
    conv = Conv1D(nf=5, nx=3)  # 3 inputs, 5 outputs
    with torch.no_grad():
        conv.bias.normal_()
    model = nn.Sequential(conv, nn.ReLU(), nn.Linear(5, 2))
    original = copy.deepcopy(model)
    _conv1d_to_linear(model)
    assert type(model[0]) is nn.Linear
    assert (model[0].in_features, model[0].out_features) == (3, 5)
    assert type(model[2]) is nn.Linear  # a plain Linear stays as it is
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(original(x), model(x), atol=1e-6)


def test_apply_int8_dynamic_quantizes_linear_and_lstm_layers() -> None:
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x)[0])

    torch.manual_seed(2)
    model = Recurrent().eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        expected = model(x)
    quantized = apply_int8_dynamic(model)
    assert isinstance(quantized.head, DynamicLinear)
    assert isinstance(quantized.lstm, DynamicLSTM)
    with torch.no_grad():
        assert torch.allclose(quantized(x), expected, atol=0.05)


def test_bnb_config_for_8bit() -> None:
    config = bnb_config(Quantization.BNB_8BIT, torch.float16)
    assert config.load_in_8bit is True
    assert config.load_in_4bit is False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_bnb_config_for_4bit_uses_nf4_and_double_quant(dtype: torch.dtype) -> None:
    config = bnb_config(Quantization.BNB_4BIT, dtype)
    assert config.load_in_4bit is True
    assert config.load_in_8bit is False
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == dtype


@pytest.mark.parametrize("mode", [Quantization.NONE, Quantization.INT8_DYNAMIC])
def test_bnb_config_rejects_modes_that_are_not_bitsandbytes(mode: Quantization) -> None:
    with pytest.raises(ValueError, match="not a bitsandbytes mode"):
        bnb_config(mode, torch.float32)


@pytest.fixture(scope="module")
def wide_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # bitsandbytes' 4-bit layers need rows of at least 64 values.
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("wide-llama"), family="llama", hidden_size=64
    )


@pytest.mark.parametrize(
    ("mode", "layer_type"), [("bnb_8bit", "Linear8bitLt"), ("bnb_4bit", "Linear4bit")]
)
def test_bitsandbytes_modes_run_on_cpu(wide_llama_folder: Path, mode: str, layer_type: str) -> None:
    full = load_causal_lm(ModelSpec(name="full", source=str(wide_llama_folder), device="cpu"))
    loaded = load_causal_lm(
        ModelSpec(name=mode, source=str(wide_llama_folder), quantization=mode, device="cpu")
    )
    projections = [m for m in decoder_layers(loaded).modules() if type(m).__name__ == layer_type]
    assert len(projections) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert loaded.model.get_memory_footprint() < full.model.get_memory_footprint()
    prompt = build_chat_input(
        loaded.tokenizer, [{"role": "user", "content": "hi"}], max_prompt_tokens=200
    )
    stream = TokenStream(loaded, prompt, SamplingParams(temperature=0, max_new_tokens=8))
    stats = stream.run(lambda piece: None)
    assert stats.completion_tokens == 8 or stats.finish_reason == "eos"
