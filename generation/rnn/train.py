"""Train a character-level GRU/LSTM language model on a text, keeping a held-out split.

Training uses truncated back-propagation through time: the training text is cut into
`batch_size` contiguous streams, each batch is the next `seq_len` characters of every stream,
and the recurrent state is carried from one batch to the next (detached), so the model sees
context longer than one batch at the cost of one batch's gradient. The last `val_fraction`
of the text (from a line start) is never trained on; after each epoch its loss per character
and perplexity (exp of that loss) are measured, and the epoch with the lowest validation loss
is the one saved.

The defaults are the starter pack's recipe: a 1 x 256 GRU, 2 epochs over the Shakespeare
corpus (4.8 million training characters). Measured on a shared 2-CPU machine with 1 thread:
218 s, held-out loss 1.472 per character (perplexity 4.36).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.rnn.loading import save_rnn_folder
from generation.rnn.model import KINDS, CharRNN, RNNConfig, State, detach_state
from generation.rnn.vocab import CharVocab


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "gru"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    epochs: int = 2
    batch_size: int = 64
    seq_len: int = 128  # characters per batch and stream: how far gradients reach back
    learning_rate: float = 3e-3  # Adam, decayed along a cosine to a tenth by the last step
    grad_clip: float = 1.0
    val_fraction: float = 0.05
    seed: int = 0
    threads: int | None = None  # torch CPU threads while training; None: default_threads()
    max_chars: int | None = None  # train on the start of the corpus only (quick runs)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        positive = ("epochs", "batch_size", "seq_len", "embedding_size", "hidden_size")
        for name in (*positive, "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be at least 0 and below 1")
        if not 0.0 < self.val_fraction <= 0.5:
            raise ValueError("val_fraction must be above 0 and at most 0.5")
        if self.learning_rate <= 0 or self.grad_clip <= 0:
            raise ValueError("learning_rate and grad_clip must be positive")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.max_chars is not None and self.max_chars < 2:
            raise ValueError("max_chars must be at least 2")


@dataclass(frozen=True)
class TrainProgress:
    """Handed to the progress callback after every batch, and once more at the end of each
    epoch with the validation figures set (`epoch_done`)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # batches done in this epoch
    steps: int  # batches in an epoch
    train_loss: float  # mean loss per character over this epoch's batches so far
    elapsed_seconds: float
    val_loss: float | None = None
    val_perplexity: float | None = None

    @property
    def epoch_done(self) -> bool:
        return self.val_loss is not None


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_perplexity: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    folder: Path
    best_epoch: int
    train_loss: float  # of the best epoch
    val_loss: float
    val_perplexity: float
    train_chars: int
    val_chars: int
    vocab_size: int
    seconds: float
    history: tuple[EpochMetrics, ...]

    def to_json(self) -> dict[str, Any]:
        """The figures written into config.json under "training"."""
        values = asdict(self)
        del values["folder"]
        values["history"] = [asdict(epoch) for epoch in self.history]
        return values


ProgressCallback = Callable[[TrainProgress], None]


def split_corpus(text: str, val_fraction: float) -> tuple[str, str]:
    """(training, held-out): the held-out part is the last `val_fraction` of the text,
    starting at a line start where there is one near the cut."""
    if len(text) < 2:
        raise ValueError("the corpus needs at least 2 characters")
    cut = len(text) - max(1, int(len(text) * val_fraction))
    newline = text.find("\n", cut, cut + 1000)
    if 0 <= newline < len(text) - 2:
        cut = newline + 1
    return text[:cut], text[cut:]


def _streams(ids: torch.Tensor, streams: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, each (streams, length): consecutive pieces of the text."""
    length = (len(ids) - 1) // streams
    inputs = ids[: streams * length].view(streams, length)
    targets = ids[1 : streams * length + 1].view(streams, length)
    return inputs, targets


def evaluate(model: CharRNN, ids: torch.Tensor, batch_size: int, seq_len: int) -> float:
    """Mean loss per character of a text (the state carried across chunks, as in training)."""
    streams = max(1, min(batch_size, (len(ids) - 1) // seq_len))
    inputs, targets = _streams(ids, streams)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    state: State | None = None
    with torch.no_grad():
        for start in range(0, inputs.shape[1], seq_len):
            x = inputs[:, start : start + seq_len]
            y = targets[:, start : start + seq_len]
            logits, state = model(x, state)
            total += float(
                nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            )
            count += y.numel()
    model.train(was_training)
    return total / count


def default_threads() -> int:
    """One CPU thread fewer than the CPUs this process may use (at least one).

    The spare CPU keeps the web process and workers on the machine responsive, and torch's
    OpenMP threads slow down badly when one of them waits for a busy core: on a shared
    2-CPU machine a training step measured 0.37 s with 1 thread and 1.75 s with 2.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def train_rnn(
    text: str,
    out: Path,
    config: TrainConfig,
    on_progress: ProgressCallback | None = None,
    corpus_name: str = "",
) -> TrainResult:
    """Train on `text`, save the best epoch's model folder to `out`, return its figures.

    The same text, config and thread count give the same weights (another thread count
    changes the order of float sums, and so the last bits): every random choice (initial
    weights, dropout) comes from `config.seed`, and the caller's torch random state and
    thread count are restored afterwards.
    """
    if config.max_chars is not None:
        text = text[: config.max_chars]
    train_text, val_text = split_corpus(text, config.val_fraction)
    if len(train_text) < config.batch_size * config.seq_len + 1:
        raise ValueError(
            f"the corpus is too small: {len(train_text)} training characters, at least "
            f"batch_size * seq_len + 1 = {config.batch_size * config.seq_len + 1} needed"
        )
    vocab = CharVocab.build(train_text)
    previous_threads = torch.get_num_threads()
    threads = config.threads or default_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            config = replace(config, threads=threads)  # saved with the figures
            return _train(train_text, val_text, vocab, out, config, on_progress, corpus_name)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    train_text: str,
    val_text: str,
    vocab: CharVocab,
    out: Path,
    config: TrainConfig,
    on_progress: ProgressCallback | None,
    corpus_name: str,
) -> TrainResult:
    started = time.perf_counter()
    device = torch.device(config.device)
    model_config = RNNConfig(
        vocab_size=len(vocab),
        kind=config.kind,
        embedding_size=config.embedding_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
    )
    model = CharRNN(model_config).to(device)
    train_ids = torch.tensor(vocab.encode(train_text), dtype=torch.long, device=device)
    val_ids = torch.tensor(vocab.encode(val_text), dtype=torch.long, device=device)
    inputs, targets = _streams(train_ids, config.batch_size)
    steps = math.ceil(inputs.shape[1] / config.seq_len)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    total_steps = steps * config.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=total_steps, eta_min=config.learning_rate / 10
    )

    def report(
        epoch: int, step: int, train_loss: float, metrics: EpochMetrics | None = None
    ) -> None:
        if on_progress is not None:
            on_progress(
                TrainProgress(
                    epoch=epoch,
                    epochs=config.epochs,
                    step=step,
                    steps=steps,
                    train_loss=train_loss,
                    elapsed_seconds=time.perf_counter() - started,
                    val_loss=metrics.val_loss if metrics else None,
                    val_perplexity=metrics.val_perplexity if metrics else None,
                )
            )

    history: list[EpochMetrics] = []
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        state: State | None = None
        loss_sum, loss_count = 0.0, 0
        for step in range(1, steps + 1):
            start = (step - 1) * config.seq_len
            x = inputs[:, start : start + config.seq_len]
            y = targets[:, start : start + config.seq_len]
            if state is not None:
                state = detach_state(state)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * y.numel()
            loss_count += y.numel()
            report(epoch, step, loss_sum / loss_count)
        val_loss = evaluate(model, val_ids, config.batch_size, config.seq_len)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / loss_count,
            val_loss=val_loss,
            val_perplexity=_perplexity(val_loss),
            seconds=time.perf_counter() - epoch_started,
        )
        history.append(metrics)
        if val_loss <= min(m.val_loss for m in history):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        report(epoch, steps, metrics.train_loss, metrics)

    assert best_state is not None  # epochs >= 1
    model.load_state_dict(best_state)
    model.eval()
    best = min(history, key=lambda m: m.val_loss)
    result = TrainResult(
        folder=out,
        best_epoch=best.epoch,
        train_loss=best.train_loss,
        val_loss=best.val_loss,
        val_perplexity=best.val_perplexity,
        train_chars=len(train_text),
        val_chars=len(val_text),
        vocab_size=len(vocab),
        seconds=time.perf_counter() - started,
        history=tuple(history),
    )
    training = {"corpus": corpus_name, **result.to_json(), "config": asdict(config)}
    save_rnn_folder(out, model.cpu(), vocab, training=training)
    return result


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float past ~709
