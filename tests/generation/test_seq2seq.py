"""Seq2seq models (T5, BART, Marian) load through from_pretrained and stream like chat."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from generation.loading import LoadedModel, load_causal_lm, load_model, load_seq2seq_lm
from generation.specs import Backend, ModelLoadError, ModelSpec, Quantization, SamplingParams, Task
from generation.streaming import TokenStream
from tests.tiny.models import build_tiny_bart, build_tiny_marian, build_tiny_t5

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "t5": build_tiny_t5,
    "bart": build_tiny_bart,
    "marian": build_tiny_marian,
}
MODEL_CLASSES = {
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "marian": "MarianMTModel",
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Rome is the capital of Italy.",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        name: build(tmp_path_factory.mktemp(f"tiny-{name}")) for name, build in BUILDERS.items()
    }


def load(folders: dict[str, Path], family: str, **options: object) -> LoadedModel:
    settings: dict[str, Any] = {
        "name": f"tiny-{family}",
        "source": str(folders[family]),
        "task": Task.SUMMARIZE,
        **options,
    }
    return load_seq2seq_lm(ModelSpec(**settings))


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def seq2seq(request: pytest.FixtureRequest, folders: dict[str, Path]) -> LoadedModel:
    """A shared tiny seq2seq model of each family: tests must not modify it."""
    return load(folders, request.param)


def encode(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text)["input_ids"])


def hf_generate(loaded: LoadedModel, prompt: list[int], **kwargs: object) -> torch.Tensor:
    input_ids = torch.tensor([prompt])
    settings: dict[str, object] = {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "num_beams": 1,
        **kwargs,
    }
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **settings
        )
    return output[0]


def decoded(loaded: LoadedModel, ids: torch.Tensor) -> str:
    return str(loaded.tokenizer.decode(ids, skip_special_tokens=True))


def stream(
    loaded: LoadedModel, prompt: list[int], params: SamplingParams, **kwargs: object
) -> tuple[list[str], TokenStream]:
    pieces: list[str] = []
    token_stream = TokenStream(loaded, prompt, params, **kwargs)  # type: ignore[arg-type]
    token_stream.run(pieces.append)
    return pieces, token_stream


# -- loading -----------------------------------------------------------------------------------


def test_each_family_loads_through_from_pretrained(seq2seq: LoadedModel) -> None:
    family = seq2seq.spec.name.removeprefix("tiny-")
    assert type(seq2seq.model).__name__ == MODEL_CLASSES[family]
    assert seq2seq.is_encoder_decoder
    assert seq2seq.model.training is False
    assert seq2seq.device == torch.device("cpu")
    assert seq2seq.tokenizer.pad_token_id is not None
    assert seq2seq.context_length == 512
    if family == "marian":
        assert type(seq2seq.tokenizer).__name__ == "MarianTokenizer"


def test_load_model_picks_the_seq2seq_class_for_summaries_and_translations(
    folders: dict[str, Path],
) -> None:
    for task in (Task.SUMMARIZE, Task.TRANSLATE):
        spec = ModelSpec(name="tiny-t5", source=str(folders["t5"]), task=task)
        assert load_model(spec).is_encoder_decoder


def test_a_seq2seq_folder_cannot_serve_chat(folders: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="not-a-chat-model"):
        load_causal_lm(ModelSpec(name="not-a-chat-model", source=str(folders["t5"])))


def test_load_errors_name_the_model_and_the_cause(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_seq2seq_lm(ModelSpec(name="ghost-t5", source=str(tmp_path / "missing")))
    assert "ghost-t5" in str(caught.value)
    broken = tmp_path / "broken"
    shutil.copytree(folders["bart"], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="corrupt-bart") as caught:
        load_seq2seq_lm(ModelSpec(name="corrupt-bart", source=str(broken)))
    assert str(broken) in str(caught.value)
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(ModelLoadError, match="no-such-arch"):
        load_seq2seq_lm(ModelSpec(name="odd", source=str(broken)))


def test_rnn_backend_is_refused_with_the_task_named(folders: dict[str, Path]) -> None:
    spec = ModelSpec(
        name="rnn", source=str(folders["t5"]), task=Task.TRANSLATE, backend=Backend.RNN
    )
    with pytest.raises(ModelLoadError, match="backend 'rnn' cannot serve translate"):
        load_seq2seq_lm(spec)


# -- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_new_tokens", [1, 7, 30])
@pytest.mark.parametrize("text", TEXTS)
def test_greedy_stream_equals_generate(
    seq2seq: LoadedModel, text: str, max_new_tokens: int
) -> None:
    prompt = encode(seq2seq, text)
    pieces, token_stream = stream(
        seq2seq, prompt, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    )
    output = hf_generate(seq2seq, prompt, max_new_tokens=max_new_tokens)
    expected = decoded(seq2seq, output)
    assert "".join(pieces) == token_stream.text == expected
    # Every generated token counts, the decoder start token does not.
    assert token_stream.stats.completion_tokens == len(output) - 1
    assert token_stream.stats.prompt_tokens == len(prompt)
    if max_new_tokens == 30:
        assert len(expected) > 5  # the tiny models do say something
        assert len(pieces) > 1


def test_sampled_stream_equals_seeded_generate(seq2seq: LoadedModel) -> None:
    prompt = encode(seq2seq, TEXTS[0])
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=25, seed=11)
    pieces, _ = stream(seq2seq, prompt, params)
    torch.manual_seed(11)
    output = hf_generate(
        seq2seq, prompt, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=25
    )
    assert "".join(pieces) == decoded(seq2seq, output)


def test_the_decoder_start_token_is_not_emitted(folders: dict[str, Path]) -> None:
    # Make the decoder start an ordinary word: if the stream passed it on, it would show.
    loaded = load(folders, "t5")
    word_id = loaded.tokenizer.convert_tokens_to_ids("▁capital")
    assert word_id != loaded.tokenizer.unk_token_id
    loaded.model.generation_config.decoder_start_token_id = word_id
    prompt = encode(loaded, TEXTS[1])
    pieces, token_stream = stream(
        loaded, prompt, SamplingParams(temperature=0.0, max_new_tokens=12)
    )
    output = hf_generate(loaded, prompt, max_new_tokens=12)
    assert int(output[0]) == word_id
    with_start = decoded(loaded, output)
    assert with_start.startswith("capital")
    assert "".join(pieces) == decoded(loaded, output[1:]) == token_stream.text
    assert token_stream.stats.completion_tokens == 12


def test_stop_sequence_cuts_a_seq2seq_reply(seq2seq: LoadedModel) -> None:
    prompt = encode(seq2seq, TEXTS[0])
    params = SamplingParams(temperature=0.0, max_new_tokens=30)
    full = "".join(stream(seq2seq, prompt, params)[0])
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = full.index(stop)
    with_stop = SamplingParams(temperature=0.0, max_new_tokens=30, stop=(stop,))
    pieces, token_stream = stream(seq2seq, prompt, with_stop)
    assert "".join(pieces) == full[:cut]
    assert token_stream.stats.finish_reason == "stop_sequence"
    assert all(stop not in piece for piece in pieces)


def test_should_stop_ends_a_seq2seq_reply(seq2seq: LoadedModel) -> None:
    prompt = encode(seq2seq, TEXTS[0])
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    pieces, token_stream = stream(
        seq2seq,
        prompt,
        SamplingParams(temperature=0.0, max_new_tokens=30),
        should_stop=stop_after_three,
    )
    assert token_stream.stats.finish_reason == "stopped"
    assert token_stream.stats.completion_tokens == 4
    # The start of the unstopped reply (a shorter max_new_tokens would differ for models
    # that force EOS on the last step).
    unstopped = hf_generate(seq2seq, prompt, max_new_tokens=30)
    assert "".join(pieces) == decoded(seq2seq, unstopped[:5])


def test_forced_eos_at_the_length_limit_counts_as_length(folders: dict[str, Path]) -> None:
    # BART and Marian force EOS on the last allowed step: the reply was cut, not finished.
    loaded = load(folders, "bart")
    prompt = encode(loaded, TEXTS[0])
    output = hf_generate(loaded, prompt, max_new_tokens=6)
    assert int(output[-1]) == loaded.tokenizer.eos_token_id
    _, token_stream = stream(loaded, prompt, SamplingParams(temperature=0.0, max_new_tokens=6))
    assert token_stream.stats.completion_tokens == 6
    assert token_stream.stats.finish_reason == "length"


def test_generate_kwargs_reach_generate(folders: dict[str, Path]) -> None:
    loaded = load(folders, "bart")
    prompt = encode(loaded, TEXTS[0])
    forced = loaded.tokenizer.convert_tokens_to_ids("Paris")
    params = SamplingParams(temperature=0.0, max_new_tokens=5)
    pieces, _ = stream(loaded, prompt, params, generate_kwargs={"forced_bos_token_id": forced})
    assert "".join(pieces).startswith("Paris")


def test_int8_dynamic_seq2seq_streams_text_close_to_the_float_model(
    folders: dict[str, Path],
) -> None:
    plain = load(folders, "marian")
    quantized = load(folders, "marian", quantization=Quantization.INT8_DYNAMIC)
    assert any("quantized" in type(m).__module__ for m in quantized.model.modules())
    prompt = encode(plain, TEXTS[1])
    with torch.inference_mode():
        decoder = torch.tensor([[plain.model.config.decoder_start_token_id]])
        logits = [
            m.model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits[0, -1]
            for m in (plain, quantized)
        ]
    # The next-token scores agree (int8 weights, float activations): the same best token
    # and similar logits. Not closer: the tiny models' deliberately wide random weights
    # (std 1, so that they say varied things) amplify int8 rounding through the layers.
    assert int(logits[0].argmax()) == int(logits[1].argmax())
    assert float(torch.cosine_similarity(logits[0], logits[1], dim=0)) > 0.85
    pieces, token_stream = stream(
        quantized, prompt, SamplingParams(temperature=0.0, max_new_tokens=10)
    )
    assert token_stream.stats.completion_tokens == 10
    assert "".join(pieces) == token_stream.text
