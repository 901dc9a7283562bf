"""manage.py train_rnn: trains on a small corpus file, draws a progress bar, reports the
held-out figures and saves a folder that the RNN loader accepts. No database is touched."""

from __future__ import annotations

import json
import math
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from generation.rnn.loading import CONFIG_FILE, load_rnn
from generation.rnn.streaming import RNNStream
from generation.specs import Backend, ModelSpec, SamplingParams

TINY_OPTIONS = {
    "kind": "gru",
    "epochs": 1,
    "embedding_size": 8,
    "hidden_size": 16,
    "batch_size": 4,
    "seq_len": 16,
    "threads": 1,
}


def corpus_file(folder: Path, lines: int = 60) -> Path:
    path = folder / "corpus.txt"
    path.write_text(
        "".join(f"HAMLET.\nTo be, or not to be: line {i % 7}.\n\n" for i in range(lines)),
        encoding="utf-8",
    )
    return path


def train(corpus: str, out: Path, **options: object) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command(
        "train_rnn",
        corpus=corpus,
        out=str(out),
        stdout=stdout,
        stderr=stderr,
        **{**TINY_OPTIONS, **options},
    )
    return stdout.getvalue(), stderr.getvalue()


def test_train_rnn_draws_progress_reports_validation_and_saves_a_loadable_folder(
    tmp_path: Path,
) -> None:
    out = tmp_path / "model"
    stdout, stderr = train(str(corpus_file(tmp_path)), out, epochs=2)

    bars = re.findall(r"\repoch (\d)/2 \[([#.]{30})\] (\d+)/(\d+)  loss (\d+\.\d{4})", stderr)
    assert bars, stderr
    assert {epoch for epoch, *_ in bars} == {"1", "2"}
    finished = [bar for bar in bars if bar[2] == bar[3]]
    assert [bar[1] for bar in finished] == ["#" * 30, "#" * 30]  # each epoch's bar fills up
    epochs = re.findall(
        r"epoch (\d)/2  train loss (\d+\.\d+)  validation loss (\d+\.\d+)  "
        r"perplexity (\d+\.\d+)",
        stderr,
    )
    assert [epoch for epoch, *_ in epochs] == ["1", "2"]

    training = json.loads((out / CONFIG_FILE).read_text())["training"]
    assert f"loss {training['val_loss']:.4f}" in stdout
    assert f"perplexity {training['val_perplexity']:.3f}" in stdout
    assert training["val_perplexity"] == pytest.approx(math.exp(training["val_loss"]))
    assert f"best epoch {training['best_epoch']} of 2" in stdout
    assert f"saved {out}" in stdout
    assert training["corpus"] == str(tmp_path / "corpus.txt")
    assert training["config"]["hidden_size"] == 16
    assert training["config"]["threads"] == 1

    loaded = load_rnn(ModelSpec(name="trained", source=str(out), backend=Backend.RNN))
    pieces: list[str] = []
    prompt = loaded.vocab.encode("HAMLET.\n")
    stats = RNNStream(loaded, prompt, SamplingParams(temperature=0.0, max_new_tokens=20)).run(
        pieces.append
    )
    assert stats.completion_tokens == 20
    assert len("".join(pieces)) == 20


def test_train_rnn_refuses_a_missing_corpus_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="neither 'shakespeare' nor a text file"):
        train(str(tmp_path / "missing.txt"), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_train_rnn_refuses_a_corpus_too_small_to_train_on(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="too small"):
        train(str(corpus_file(tmp_path, lines=1)), tmp_path / "model")


def test_train_rnn_refuses_bad_options(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="epochs must be at least 1"):
        train(str(corpus_file(tmp_path)), tmp_path / "model", epochs=0)
    with pytest.raises(CommandError, match="kind"):
        train(str(corpus_file(tmp_path)), tmp_path / "model", kind="rnn")
