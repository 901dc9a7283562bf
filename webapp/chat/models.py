"""Conversations and their messages. Messages form a tree (each has a parent), so that
regenerating and editing can branch; the visible conversation is one path through it."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TitleSource(models.TextChoices):
    AUTO = "auto"  # cut from the first message, until the model writes one
    MODEL = "model"
    USER = "user"


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200)
    title_source = models.CharField(
        max_length=10, choices=TitleSource.choices, default=TitleSource.AUTO
    )
    model = models.ForeignKey(
        "catalog.ModelEntry", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    system_prompt = models.TextField(blank=True)
    current_leaf = models.ForeignKey(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The last message of the branch shown (regenerate and edit create branches).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(
        blank=True, help_text="The user's text; an assistant's text is its generation's output."
    )
    generation = models.OneToOneField(
        "inference.Generation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="message",
    )
    blocked_by = models.ForeignKey(
        "moderation.ModerationEvent",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The verdict that kept this user message from the model, if one did.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"

    @property
    def text(self) -> str:
        if self.role == Role.ASSISTANT and self.generation is not None:
            return self.generation.output
        return self.content
