"""Delete audit entries older than the retention (ATELIER_AUDIT_RETENTION_DAYS, or --days).
Run it daily, e.g. from cron: `python manage.py purge_audit`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.moderation import services


class Command(BaseCommand):
    help = "Delete moderation audit entries older than ATELIER_AUDIT_RETENTION_DAYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"keep this many days (default: the setting, "
            f"{settings.ATELIER_AUDIT_RETENTION_DAYS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            deleted = services.purge_audit(options["days"])
        except services.ModerationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Deleted {deleted} audit entries.")
