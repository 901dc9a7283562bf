from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "webapp.operations"
    label = "operations"

    def ready(self) -> None:
        from webapp.operations import metrics

        metrics.connect()
