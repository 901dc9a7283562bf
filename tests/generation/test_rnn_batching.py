"""The RNN batch: a hidden state per row, rows joining and leaving, each giving what
RNNStream gives alone (greedy and seeded), for GRU and LSTM models."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
import torch

from generation.rnn.batching import BatchedRNNStream, RNNBatcher
from generation.rnn.loading import LoadedRNN, load_rnn, save_rnn_folder
from generation.rnn.model import CharRNN, RNNConfig
from generation.rnn.streaming import RNNStream
from generation.rnn.vocab import CharVocab
from generation.specs import Backend, ModelSpec, SamplingParams

TEXT = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n"


@pytest.fixture(scope="module", params=["gru", "lstm"])
def rnn(request: Any, tmp_path_factory: pytest.TempPathFactory) -> LoadedRNN:
    torch.manual_seed(0)
    vocab = CharVocab.build(TEXT)
    config = RNNConfig(vocab_size=len(vocab), embedding_size=8, hidden_size=16, kind=request.param)
    folder = save_rnn_folder(
        tmp_path_factory.mktemp("rnn") / request.param, CharRNN(config).eval(), vocab
    )
    return load_rnn(ModelSpec(name="tiny-rnn", source=str(folder), backend=Backend.RNN))


def alone(rnn: LoadedRNN, prompt: str, params: SamplingParams) -> tuple[str, str, int]:
    stream = RNNStream(rnn, rnn.vocab.encode(prompt), params)
    stats = stream.run(lambda piece: None)
    return stream.text, stats.finish_reason, stats.completion_tokens


def together(batcher: RNNBatcher, requests: list[tuple[str, SamplingParams]]) -> list[Any]:
    results: list[Any] = [None] * len(requests)

    def run(index: int) -> None:
        prompt, params = requests[index]
        stream = BatchedRNNStream(batcher, batcher.rnn.vocab.encode(prompt), params)
        stats = stream.run(lambda piece: None)
        results[index] = (stream.text, stats.finish_reason, stats.completion_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_rnn_rows_in_a_batch_give_what_each_gives_alone(rnn: LoadedRNN) -> None:
    greedy = SamplingParams(temperature=0.0, max_new_tokens=40)
    seeded = SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=60, seed=3)
    short = replace(greedy, max_new_tokens=7)
    stop = replace(seeded, stop=(alone(rnn, "To be", seeded)[0][10:12],))
    requests = [("To be", greedy), ("Whether", seeded), ("question", short), ("To be", stop)]
    expected = [alone(rnn, prompt, params) for prompt, params in requests]
    batcher = RNNBatcher(rnn, max_batch=8)
    assert together(batcher, requests) == expected
    assert batcher.widest >= 2
    assert expected[3][1] == "stop_sequence" and expected[2][1:] == ("length", 7)
    assert not batcher._rows and batcher.active == 0
