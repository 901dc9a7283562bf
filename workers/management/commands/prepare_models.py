"""Prepare the offline starter pack once (idempotent) and register it in the catalog."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generation.rnn.train import TrainProgress
from generation.starter_pack import STARTER_PACK
from webapp.catalog.services import register_local_model


class Command(BaseCommand):
    help = (
        "Prepare the offline starter models once (idempotent: a prepared model is reused) "
        "and register them in the catalog. The first run trains the Shakespeare GRU, a few "
        "minutes on a small CPU."
    )

    def add_arguments(self, parser: Any) -> None:
        keys = [model.key for model in STARTER_PACK]
        parser.add_argument(
            "--only",
            nargs="+",
            choices=keys,
            help="prepare only these starter models (default: all)",
        )

    def handle(self, *args: object, **options: Any) -> None:
        models_dir = settings.MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        only = set(options.get("only") or [])
        for starter in STARTER_PACK:
            if only and starter.key not in only:
                continue
            try:
                prepared = starter.prepare(models_dir, self._progress)
            except (FileNotFoundError, ValueError) as exc:
                raise CommandError(f"{starter.key}: {exc}") from exc
            state = "prepared" if prepared.created else "ready"
            self.stdout.write(f"{prepared.name}: {state} in {prepared.folder}")
            for registration in starter.registrations:
                entry, created = register_local_model(
                    name=registration.name,
                    folder=str(prepared.folder),
                    task=registration.task,
                    backend=registration.backend,
                    quantization=registration.quantization,
                    description=registration.description,
                    make_default=registration.default,
                    fields=dict(registration.fields),
                )
                self.stdout.write(
                    f"catalog: {entry.name} {'registered' if created else 'already registered'}"
                )

    def _progress(self, progress: TrainProgress) -> None:
        if progress.epoch_done:
            self.stdout.write(
                f"  epoch {progress.epoch}/{progress.epochs}: validation loss "
                f"{progress.val_loss:.4f}, perplexity {progress.val_perplexity:.3f} "
                f"({progress.elapsed_seconds:.0f}s)"
            )
