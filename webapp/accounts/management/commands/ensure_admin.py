import os

from django.core.management.base import BaseCommand, CommandParser

from webapp.accounts.services import ensure_admin


class Command(BaseCommand):
    help = (
        "Create the first admin account if there is none "
        "(password from ATELIER_ADMIN_PASSWORD, or generated and shown once)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("ATELIER_ADMIN_USER", "admin"))

    def handle(self, *args: object, username: str, **options: object) -> None:
        user, generated = ensure_admin(username, os.environ.get("ATELIER_ADMIN_PASSWORD"))
        if generated:
            self.stdout.write(f"Created admin account {user.username!r} with password: {generated}")
            self.stdout.write("(shown once; change it under Account > Change password)")
        else:
            self.stdout.write(f"Admin account: {user.username!r}")
