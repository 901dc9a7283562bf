from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "webapp.chat"
    label = "chat"

    def ready(self) -> None:
        from webapp.chat import services
        from webapp.inference.signals import generation_finished

        # A reply whose input a moderation model blocked on the worker marks its message.
        generation_finished.connect(
            services.on_generation_finished, dispatch_uid="chat.on_generation_finished"
        )
