from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "webapp.jobs"
    label = "jobs"

    def ready(self) -> None:
        from webapp.inference.signals import generation_finished
        from webapp.jobs import engine

        # In every process that records outcomes (workers and web): a finished item's
        # result is written and the job topped up as soon as the outcome is committed.
        generation_finished.connect(
            engine.on_generation_finished, dispatch_uid="jobs.on_generation_finished"
        )
