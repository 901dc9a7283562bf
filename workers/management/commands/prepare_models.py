"""Prepare the offline starter pack once (idempotent) and register it in the catalog."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generation.rnn.train import TrainProgress
from generation.starter_pack import STARTER_PACK, StarterModel
from webapp.catalog.models import ModelEntry
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
        parser.add_argument(
            "--except-slow",
            action="store_true",
            help="leave the slow ones (training) unprepared: register them as being prepared",
        )
        parser.add_argument(
            "--slow", action="store_true", help="prepare only the slow ones (training)"
        )

    def handle(self, *args: object, **options: Any) -> None:
        models_dir = settings.MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        only = set(options.get("only") or [])
        for starter in STARTER_PACK:
            if (only and starter.key not in only) or (options["slow"] and not starter.slow):
                continue
            ready = not starter.slow or (models_dir / starter.folder).exists()
            if options["except_slow"] and not ready:
                self._register(starter, str(models_dir / starter.folder), preparing=True)
                continue
            try:
                prepared = starter.prepare(models_dir, self._progress)
            except Exception as exc:
                self._failed(starter, exc)
                raise CommandError(f"{starter.key}: {exc}") from exc
            state = "prepared" if prepared.created else "ready"
            self.stdout.write(f"{prepared.name}: {state} in {prepared.folder}")
            self._register(starter, str(prepared.folder), preparing=False)

    def _register(self, starter: StarterModel, folder: str, preparing: bool) -> None:
        for registration in starter.registrations:
            entry, created = register_local_model(
                name=registration.name,
                folder=folder,
                task=registration.task,
                backend=registration.backend,
                quantization=registration.quantization,
                description=registration.description,
                make_default=registration.default,
                fields=dict(registration.fields),
                preparing=preparing,
            )
            state = "registered" if created else "already registered"
            self.stdout.write(
                f"catalog: {entry.name} {state}{', being prepared' if preparing else ''}"
            )

    def _failed(self, starter: StarterModel, exc: Exception) -> None:
        """A model that could not be prepared is no longer shown as being prepared: its
        entries say why instead."""
        names = [registration.name for registration in starter.registrations]
        ModelEntry.objects.filter(name__in=names, preparing=True).update(
            preparing=False, last_error=f"could not be prepared: {exc}"
        )

    def _progress(self, progress: TrainProgress) -> None:
        if progress.epoch_done:
            self.stdout.write(
                f"  epoch {progress.epoch}/{progress.epochs}: validation loss "
                f"{progress.val_loss:.4f}, perplexity {progress.val_perplexity:.3f} "
                f"({progress.elapsed_seconds:.0f}s)"
            )
