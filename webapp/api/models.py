"""The API's own records: personal keys (stored as a hash), who may have keys, and the
files and batches of the Batch API (a batch is a `jobs.Job` underneath)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A personal key. The secret is shown once when created; only its SHA-256 is kept
    (keys are long random strings, so a fast hash is enough), with a short prefix to
    tell keys apart in lists."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters.")
    hashed = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    expiry_recorded = models.BooleanField(
        default=False, help_text="The expiry is in the audit trail."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}) of {self.user_id}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"


class GroupKeyAccess(models.Model):
    """Whether members of a group may have API keys. A user in no group with a row gets
    ATELIER_API_KEYS_FOR_EVERYONE; in several, any group that allows is enough. Admins
    always may."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="api_access")
    may_have_keys = models.BooleanField(default=True)

    class Meta:
        verbose_name = "group API access"
        verbose_name_plural = "group API access"

    def __str__(self) -> str:
        return f"API keys {'allowed' if self.may_have_keys else 'refused'} for {self.group}"


class FilePurpose(models.TextChoices):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"


class ApiFile(models.Model):
    """A file of the Files API: an uploaded batch input, or a batch's output or errors."""

    public_id = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=20, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    data = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API file"

    def __str__(self) -> str:
        return f"{self.public_id} {self.filename}"


class ApiBatch(models.Model):
    """A batch of the Batch API; its requests are the items of `job`."""

    public_id = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    job = models.OneToOneField("jobs.Job", on_delete=models.CASCADE, related_name="api_batch")
    endpoint = models.CharField(max_length=40)
    input_file = models.ForeignKey(ApiFile, on_delete=models.SET_NULL, null=True, related_name="+")
    input_file_public_id = models.CharField(max_length=40)
    output_file = models.ForeignKey(
        ApiFile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error_file = models.ForeignKey(
        ApiFile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    completion_window = models.CharField(max_length=10, default="24h")
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API batch"
        verbose_name_plural = "API batches"

    def __str__(self) -> str:
        return f"{self.public_id} ({self.endpoint})"
