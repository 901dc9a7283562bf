from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The worker side as a Django app: only its management commands (prepare_models,
    train_rnn, batch_summarize), which load models. Installed by `workers.settings` only."""

    name = "workers"
    label = "workers"
