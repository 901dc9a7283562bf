from django.db import migrations, models


def context_from_messages(apps, schema_editor):
    """An input event's context was read from its chat message's parent; keep it."""
    ModerationEvent = apps.get_model("moderation", "ModerationEvent")
    Message = apps.get_model("chat", "Message")
    events = ModerationEvent.objects.filter(direction="input", message__isnull=False)
    for event in events.iterator():
        message = Message.objects.filter(pk=event.message_id).select_related("parent").first()
        parent = message.parent if message is not None else None
        if parent is None:
            continue
        text = parent.content
        if parent.role == "assistant" and parent.generation_id:
            Generation = apps.get_model("inference", "Generation")
            text = (
                Generation.objects.filter(pk=parent.generation_id)
                .values_list("output", flat=True)
                .first()
                or ""
            )
        ModerationEvent.objects.filter(pk=event.pk).update(context=text)


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0002_policy_classifier_models"),
        ("chat", "0003_conversation_title_source"),
        ("inference", "0003_generation_result"),
    ]

    operations = [
        migrations.AddField(
            model_name="moderationevent",
            name="context",
            field=models.TextField(
                blank=True, help_text="What an input answers (the reply before a chat message)."
            ),
        ),
        migrations.RunPython(context_from_messages, migrations.RunPython.noop),
    ]
