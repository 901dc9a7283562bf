"""The model registry: which models exist, how to load them, and who may use them."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction

from generation.specs import (
    MAX_NEW_TOKENS_LIMIT,
    REPETITION_PENALTY_RANGE,
    Backend,
    Device,
    ModelSpec,
    Quantization,
    Task,
    looks_like_path,
)


def _choices(
    enum: type[Task] | type[Backend] | type[Quantization] | type[Device],
) -> list[tuple[str, str]]:
    return [(member.value, member.value) for member in enum]


# A worker's batch sizes: the default per device when an entry sets none, and the most.
DEFAULT_MAX_BATCH = {Device.CPU: 16, Device.CUDA: 32}
MAX_BATCH_LIMIT = 256


class ModelEntry(models.Model):
    name = models.CharField(max_length=100, unique=True)
    task = models.CharField(max_length=20, choices=_choices(Task), default=Task.CHAT)
    source = models.CharField(max_length=500, help_text="A hub model id, or a local folder path.")
    backend = models.CharField(
        max_length=20, choices=_choices(Backend), default=Backend.TRANSFORMERS
    )
    quantization = models.CharField(
        max_length=20, choices=_choices(Quantization), default=Quantization.NONE
    )
    device = models.CharField(max_length=10, choices=_choices(Device), default=Device.AUTO)
    queue = models.CharField(
        max_length=100,
        default="inference",
        validators=[
            RegexValidator(r"^[A-Za-z0-9_.-]+$", "Use letters, digits, '-', '_' and '.' only.")
        ],
        help_text="Celery queue; workers serve the queues they are started with.",
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField("default for its task", default=False)
    description = models.CharField(max_length=300, blank=True)
    allowed_groups = models.ManyToManyField(
        Group, blank=True, help_text="Leave empty to let every approved user use this model."
    )
    preparing = models.BooleanField(
        "being prepared",
        default=False,
        help_text=(
            "Set while Atelier prepares this model on this machine (e.g. trains the starter "
            "RNN); it cannot be used until then."
        ),
    )
    last_error = models.TextField(
        blank=True, help_text="Set by a worker that failed to load the model."
    )
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_loaded_at = models.DateTimeField(null=True, blank=True)
    max_batch = models.PositiveSmallIntegerField(
        "max batch",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_BATCH_LIMIT)],
        help_text=(
            "How many generations of this model a worker decodes together (1 runs them one "
            "at a time). Empty: the device's default (16 on CPU, 32 on CUDA)."
        ),
    )
    # Sampling defaults for requests that do not set their own (empty: Atelier's own).
    default_temperature = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(2.0)],
        help_text="0 to 2 (0 is greedy). Empty: 0.7.",
    )
    default_top_p = models.FloatField(
        "default top_p",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01), MaxValueValidator(1.0)],
        help_text="Above 0, at most 1. Empty: 0.95.",
    )
    default_max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_NEW_TOKENS_LIMIT)],
        help_text="Longest reply. Empty: ATELIER_DEFAULT_MAX_TOKENS (512).",
    )
    default_repetition_penalty = models.FloatField(
        null=True,
        blank=True,
        validators=[
            MinValueValidator(REPETITION_PENALTY_RANGE[0]),
            MaxValueValidator(REPETITION_PENALTY_RANGE[1]),
        ],
        help_text="1 (none) to 2; small models often need 1.1 to 1.3 to stop repeating. Empty: 1.",
    )
    takes_system_prompt = models.BooleanField(
        default=True,
        help_text="Untick for models that ignore one (a character-level RNN continues text).",
    )
    benchmark = models.JSONField(
        null=True,
        blank=True,
        help_text="Latest figures per device from bench/quantization.py --store.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task", "-is_default", "name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        with transaction.atomic():
            if self.is_default:  # one default per task
                ModelEntry.objects.filter(task=self.task, is_default=True).exclude(
                    pk=self.pk
                ).update(is_default=False)
            super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        if looks_like_path(self.source) and self.backend == Backend.TRANSFORMERS:
            folder = Path(self.source).expanduser()
            if not folder.is_dir():
                raise ValidationError(
                    {"source": f"Folder {self.source} does not exist on this machine."}
                )
        if self.quantization == Quantization.INT8_DYNAMIC and self.device == Device.CUDA:
            raise ValidationError(
                {"quantization": "int8_dynamic runs on CPU only; use bnb_8bit or bnb_4bit on cuda."}
            )

    def batch_size(self, device: str) -> int:
        """How many of this model's generations a worker on `device` ("cpu" or "cuda")
        decodes together: the entry's own setting, else the device's default."""
        if self.max_batch:
            return self.max_batch
        return DEFAULT_MAX_BATCH.get(Device(device), DEFAULT_MAX_BATCH[Device.CPU])

    def sampling_defaults(self) -> dict[str, float | int]:
        """The sampling parameters this entry sets, under SamplingParams' names."""
        values = {
            "temperature": self.default_temperature,
            "top_p": self.default_top_p,
            "max_new_tokens": self.default_max_tokens,
            "repetition_penalty": self.default_repetition_penalty,
        }
        return {name: value for name, value in values.items() if value is not None}

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            source=self.source,
            task=Task(self.task),
            backend=Backend(self.backend),
            quantization=Quantization(self.quantization),
            device=Device(self.device),
        )
