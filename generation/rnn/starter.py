"""The starter pack's RNN: a character-level GRU trained once on the packaged Shakespeare."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from generation.rnn.corpus import SHAKESPEARE, read_shakespeare
from generation.rnn.loading import read_rnn_folder
from generation.rnn.train import ProgressCallback, TrainConfig, train_rnn
from generation.specs import ModelLoadError
from generation.starter import PreparedModel

log = logging.getLogger(__name__)

SHAKESPEARE_GRU_FOLDER = "shakespeare-char-gru"


def prepare_rnn(
    models_dir: Path,
    folder_name: str = SHAKESPEARE_GRU_FOLDER,
    text: str | None = None,
    config: TrainConfig | None = None,
    on_progress: ProgressCallback | None = None,
) -> PreparedModel:
    """Train the model into models_dir/folder_name unless a loadable one is there already.

    By default: the Shakespeare corpus and `TrainConfig()`'s recipe (a few minutes on two
    CPUs). Training writes to a `.partial` folder that is renamed when complete, so an
    interrupted run leaves nothing that looks prepared; a damaged folder is trained again.
    """
    folder = models_dir / folder_name
    if folder.exists():
        try:
            read_rnn_folder(folder, folder_name)
            return PreparedModel(folder_name, folder, created=False)
        except ModelLoadError as exc:
            log.warning("retraining %s: %s", folder_name, exc)
    corpus = SHAKESPEARE if text is None else "supplied text"
    log.info("training %s on %s", folder_name, corpus)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    train_rnn(
        read_shakespeare() if text is None else text,
        tmp,
        config or TrainConfig(),
        on_progress=on_progress,
        corpus_name=corpus,
    )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return PreparedModel(folder_name, folder, created=True)
