import django.db.models.deletion
from django.db import migrations, models


def blocked_by_from_events(apps, schema_editor):
    """A blocked message was found through its event's foreign key to it; the message now
    names the event."""
    ModerationEvent = apps.get_model("moderation", "ModerationEvent")
    Message = apps.get_model("chat", "Message")
    blocks = ModerationEvent.objects.filter(
        direction="input", action="block", message__isnull=False
    ).order_by("pk")
    for event_id, message_id in blocks.values_list("pk", "message_id"):
        Message.objects.filter(pk=message_id, blocked_by__isnull=True).update(blocked_by=event_id)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_conversation_title_source"),
        ("moderation", "0003_moderationevent_context"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="blocked_by",
            field=models.ForeignKey(
                blank=True,
                help_text="The verdict that kept this user message from the model, if one did.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="moderation.moderationevent",
            ),
        ),
        migrations.RunPython(blocked_by_from_events, migrations.RunPython.noop),
    ]
