"""Moderation data: per-group policies, admin rules and allow-list (both feed the filter in
`generation.safety`), the record of every flagged or blocked text, strikes, suspensions and
the audit trail."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Coalesce

from generation.safety import Action, OutputCheck, RuleError
from generation.safety import Policy as FilterPolicy
from generation.safety import Rule as FilterRule

_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,39}")


def parse_categories(value: str) -> list[str]:
    """ "hate, violence" (commas or whitespace) as a list of category slugs."""
    names = [name for name in re.split(r"[\s,]+", value.strip().lower()) if name]
    bad = [name for name in names if not _CATEGORY.fullmatch(name)]
    if bad:
        raise ValidationError(
            f"Not a category name: {', '.join(bad)} (lowercase letters, digits and _)."
        )
    return list(dict.fromkeys(names))


class Policy(models.Model):
    """What the filter does for the members of one group, or (no group) for everyone else.

    A category named nowhere here follows the rule's own action; the classifier's category
    ("offensive") follows the thresholds. A user in several groups gets the strictest.
    """

    name = models.CharField(max_length=100)
    group = models.OneToOneField(
        "auth.Group",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="moderation_policy",
        help_text="Empty: the default policy, for users in no group with a policy.",
    )
    block_categories = models.CharField(
        max_length=500, blank=True, help_text="Categories that block, e.g. 'hate, violence'."
    )
    flag_categories = models.CharField(
        max_length=500, blank=True, help_text="Categories that are only flagged for review."
    )
    ignore_categories = models.CharField(
        max_length=500, blank=True, help_text="Categories that are neither flagged nor blocked."
    )
    flag_threshold = models.FloatField(
        default=0.85, help_text="Classifier score (0..1) from which a text is flagged."
    )
    block_threshold = models.FloatField(
        default=0.98, help_text="Classifier score (0..1) from which a text is blocked."
    )
    output_check = models.CharField(
        max_length=10,
        choices=[
            (OutputCheck.STREAMING.value, "while streaming (per sentence)"),
            (OutputCheck.END.value, "only at the end (nothing shown until checked)"),
        ],
        default=OutputCheck.STREAMING.value,
    )
    use_classifier = models.BooleanField(
        "use the built-in classifier",
        default=True,
        help_text="The offline offensive-language classifier (alt-profanity-check).",
    )
    classifier_models = models.ManyToManyField(
        "catalog.ModelEntry",
        blank=True,
        related_name="moderation_policies",
        limit_choices_to={"task": "moderation"},
        verbose_name="moderation models",
        help_text="Catalog models (task 'moderation': a text classifier such as a toxicity "
        "model, or a generative safety model such as Llama Guard) that also check every "
        "input and output, on the worker, instead of or in addition to the built-in "
        "classifier. If one cannot be loaded, requests under this policy fail rather than "
        "go unchecked.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        constraints = [
            # One policy per group, and one default (NULL group counted as group 0).
            models.UniqueConstraint(Coalesce("group", 0), name="moderation_one_policy_per_group")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.group or 'default'})"

    def clean(self) -> None:
        try:
            self.as_filter_policy()  # category names raise ValidationError themselves
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        named = [
            *parse_categories(self.block_categories),
            *parse_categories(self.flag_categories),
            *parse_categories(self.ignore_categories),
        ]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise ValidationError(f"Categories named more than once: {', '.join(twice)}.")
        if self.group_id is None:
            others = Policy.objects.filter(group__isnull=True).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError("There is already a default policy (no group).")

    def actions(self) -> dict[str, Action]:
        found: dict[str, Action] = {}
        for field, action in (
            (self.ignore_categories, Action.ALLOW),
            (self.flag_categories, Action.FLAG),
            (self.block_categories, Action.BLOCK),
        ):
            for category in parse_categories(field):
                found[category] = action
        return found

    def as_filter_policy(self) -> FilterPolicy:
        # (an unsaved policy has no moderation models yet: the form's clean() checks the rest)
        names = sorted(entry.name for entry in self.classifier_models.all()) if self.pk else []
        return FilterPolicy(
            actions=self.actions(),
            flag_threshold=self.flag_threshold,
            block_threshold=self.block_threshold,
            output_check=OutputCheck(self.output_check),
            use_classifier=self.use_classifier,
            model_classifiers=tuple(names),
        )


class RuleKind(models.TextChoices):
    WORDS = "words", "word list"
    REGEX = "regex", "regular expressions"


class Rule(models.Model):
    """An admin's rule. It joins the shipped rules; one with a shipped rule's id replaces
    it (disable it to switch the shipped one off)."""

    rule_id = models.SlugField(max_length=100, unique=True, help_text="e.g. 'spam-links'.")
    category = models.CharField(max_length=40, help_text="e.g. hate, violence, spam, pii.")
    kind = models.CharField(max_length=10, choices=RuleKind.choices, default=RuleKind.WORDS)
    patterns = models.TextField(
        help_text="One per line. Words: whole words after normalization, '*' at a start "
        "or end for any prefix or suffix. Regex: Python regular expressions."
    )
    action = models.CharField(
        max_length=10,
        choices=[(a.value, a.value) for a in Action],
        default=Action.BLOCK.value,
        help_text="Used when the policy does not name the category.",
    )
    description = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rule_id"]

    def __str__(self) -> str:
        return self.rule_id

    def as_filter_rule(self) -> FilterRule:
        return FilterRule(
            id=self.rule_id,
            category=self.category,
            kind=self.kind,  # type: ignore[arg-type]  # Rule converts it
            patterns=tuple(self.patterns.splitlines()),
            action=Action(self.action),
            description=self.description,
            enabled=self.enabled,
        )

    def clean(self) -> None:
        from generation.safety import RuleSet

        try:
            RuleSet([replace(self.as_filter_rule(), enabled=True)])  # compile it, even if off
        except RuleError as exc:
            raise ValidationError(str(exc)) from exc


class AllowedPhrase(models.Model):
    """A phrase the rules and classifiers leave alone (fed by "false positive" reviews)."""

    phrase = models.CharField(max_length=200, unique=True)
    note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    source_event = models.ForeignKey(
        "ModerationEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["phrase"]

    def __str__(self) -> str:
        return self.phrase

    def clean(self) -> None:
        from generation.safety import RuleSet

        try:
            RuleSet((), [self.phrase])
        except RuleError as exc:
            raise ValidationError(str(exc)) from exc


class ConfigVersion(models.Model):
    """One row whose token changes with every policy, rule or allow-list change: processes
    compare it with the one their cached filter was built from (webapp/moderation/config.py).
    A random token rather than a counter, so that a recreated table never repeats one."""

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.token

    @classmethod
    def bump(cls) -> None:
        token = uuid.uuid4().hex
        if not cls.objects.filter(pk=1).update(token=token):
            cls.objects.update_or_create(pk=1, defaults={"token": token})


class Direction(models.TextChoices):
    INPUT = "input"
    OUTPUT = "output"


class VerdictAction(models.TextChoices):
    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "to review"
    CONFIRMED = "confirmed", "confirmed"
    FALSE_POSITIVE = "false_positive", "false positive"


class ModerationEvent(models.Model):
    """A flagged or blocked text: what was checked, the verdict, and its review."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="moderation_events"
    )
    direction = models.CharField(max_length=6, choices=Direction.choices)
    task = models.CharField(max_length=20)
    text = models.TextField(help_text="The text checked (an output: all of it, withheld too).")
    context = models.TextField(
        blank=True, help_text="What an input answers (the reply before a chat message)."
    )
    generation = models.ForeignKey(
        "inference.Generation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="moderation_events",
    )
    action = models.CharField(max_length=5, choices=VerdictAction.choices)
    category = models.CharField(max_length=40, blank=True)
    score = models.FloatField(default=0.0)
    explanation = models.TextField(blank=True)
    details = models.JSONField(default=dict, help_text="The verdict with every finding.")
    policy = models.CharField(max_length=300, blank=True, help_text="The policies applied.")
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING, db_index=True
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["generation", "direction", "action"])]

    def __str__(self) -> str:
        return f"{self.direction} {self.action} {self.category} #{self.pk}"

    @property
    def excerpt(self) -> str:
        line = " ".join(self.text.split())
        return line[:200] + ("…" if len(line) > 200 else "")


class Strike(models.Model):
    """A confirmed strike against a user, given by an admin (from the review queue)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="strikes"
    )
    event = models.ForeignKey(
        ModerationEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="strikes"
    )
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"strike on {self.user} ({self.reason})"


class Suspension(models.Model):
    """An account suspended (automatically after too many strikes, or by an admin) until an
    admin lifts it. A suspended user can look around but not generate."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="suspensions"
    )
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: suspended automatically.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(lifted_at__isnull=True),
                name="moderation_one_active_suspension",
            )
        ]

    def __str__(self) -> str:
        return f"suspension of {self.user}"

    @property
    def active(self) -> bool:
        return self.lifted_at is None


class AuditEntry(models.Model):
    """Who did what, when, on which item: every verdict and every admin action."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="'system' for automatic ones.")
    action = models.CharField(max_length=60, db_index=True, help_text="e.g. input.block.")
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=40, blank=True)
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The user the item belongs to.",
    )
    subject_name = models.CharField(max_length=150, blank=True)
    summary = models.CharField(max_length=500)
    details: models.JSONField[Any] = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action}"
