from django.conf import settings
from django.core.management.base import BaseCommand

from generation.starter import prepare_smollm2
from webapp.catalog.services import register_local_model


class Command(BaseCommand):
    help = "Prepare the offline starter models once (idempotent) and register them in the catalog."

    def handle(self, *args: object, **options: object) -> None:
        models_dir = settings.MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        prepared = prepare_smollm2(models_dir)
        self.stdout.write(
            f"{prepared.name}: {'prepared' if prepared.created else 'ready'} in {prepared.folder}"
        )
        entry, created = register_local_model(
            name="SmolLM2-135M-Instruct",
            folder=str(prepared.folder),
            task="chat",
            quantization="int8_dynamic",
            description="Small instruction-tuned chat model (135M parameters), int8 on CPU.",
            make_default=True,
        )
        self.stdout.write(
            f"catalog: {entry.name} {'registered' if created else 'already registered'}"
        )
