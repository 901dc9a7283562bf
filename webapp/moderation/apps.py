from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "webapp.moderation"
    label = "moderation"

    def ready(self) -> None:
        import webapp.moderation.signals  # noqa: F401  (connects the receivers)
