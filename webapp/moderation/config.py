"""The safety filter and the policies this process checks with, rebuilt when an admin
changes them: every check reads one small row (`ConfigVersion.token`, changed by every
save or delete of a policy, rule or allowed phrase) and rebuilds its cached copy when the
token differs, so a change is in force from the next check on, in every process, without
a restart. The classifier is loaded once per process and kept across rebuilds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError

from generation.safety import (
    DEFAULT_POLICY,
    Action,
    OutputCheck,
    ProfanityCheckClassifier,
    Rule,
    RuleError,
    RuleSet,
    SafetyFilter,
    TextClassifier,
    load_default_rules,
)
from generation.safety import Policy as FilterPolicy
from webapp.accounts.models import User
from webapp.moderation import models

log = logging.getLogger(__name__)

DEFAULT_NAME = "built-in default"


@dataclass(frozen=True)
class NamedPolicy:
    name: str
    policy: FilterPolicy


@dataclass(frozen=True)
class Config:
    token: str
    safety: SafetyFilter
    default: NamedPolicy
    by_group: dict[int, NamedPolicy] = field(default_factory=dict)
    broken_rules: tuple[str, ...] = ()  # admin rules left out because they do not compile

    def policy_for_groups(self, group_ids: Sequence[int]) -> NamedPolicy:
        found = [self.by_group[g] for g in group_ids if g in self.by_group]
        if not found:
            return self.default
        if len(found) == 1:
            return found[0]
        return NamedPolicy(
            " + ".join(sorted(p.name for p in found)), strictest([p.policy for p in found])
        )


def strictest(policies: Sequence[FilterPolicy]) -> FilterPolicy:
    """One policy at least as strict as each of `policies` (a user in several groups).

    A category's action is the most severe the policies name. Where some policy does not
    name the category (so the rule's own action, or no ceiling on the classifier, applies
    there), the category stays unnamed unless another policy blocks it, since the rule's
    own action may be stricter than a named "flag". Thresholds are the lowest, checking at
    the end beats checking while streaming (nothing unchecked is shown), the built-in
    classifier runs if any policy asks for it, and so does each policy's moderation model.
    """
    categories = {c for p in policies for c in p.actions}
    actions: dict[str, Action] = {}
    for category in categories:
        named = [p.actions[category] for p in policies if category in p.actions]
        worst = max(named, key=lambda a: a.severity)
        if len(named) == len(policies) or worst is Action.BLOCK:
            actions[category] = worst
    return FilterPolicy(
        actions=actions,
        flag_threshold=min(p.flag_threshold for p in policies),
        block_threshold=min(p.block_threshold for p in policies),
        output_check=(
            OutputCheck.END
            if any(p.output_check is OutputCheck.END for p in policies)
            else OutputCheck.STREAMING
        ),
        use_classifier=any(p.use_classifier for p in policies),
        model_classifiers=tuple(sorted({m for p in policies for m in p.model_classifiers})),
    )


_lock = threading.Lock()
_current: Config | None = None
_classifiers: tuple[TextClassifier, ...] | None = None


def _shared_classifiers() -> tuple[TextClassifier, ...]:
    global _classifiers
    if _classifiers is None:
        _classifiers = (ProfanityCheckClassifier(),)
    return _classifiers


def current_token() -> str:
    token = models.ConfigVersion.objects.filter(pk=1).values_list("token", flat=True).first()
    return token or ""


def current() -> Config:
    """The configuration in force now (one indexed read when nothing changed)."""
    global _current
    token = current_token()
    config = _current
    if config is not None and config.token == token:
        return config
    with _lock:
        if _current is not None and _current.token == token:
            return _current
        _current = _build(token)
        return _current


def _build(token: str) -> Config:
    rules: dict[str, Rule] = {}
    allow: list[str] = []
    if settings.ATELIER_MODERATION_DEFAULT_RULES:
        shipped, shipped_allow = load_default_rules()
        rules.update((rule.id, rule) for rule in shipped)
        allow.extend(shipped_allow)
    broken: list[str] = []
    for rule_row in models.Rule.objects.all():
        try:
            rule = rule_row.as_filter_rule()
            RuleSet([rule])  # compiles: one broken rule must not switch the others off
        except RuleError as exc:
            log.error("moderation rule %s left out: %s", rule_row.rule_id, exc)
            broken.append(rule_row.rule_id)
            continue
        rules[rule.id] = rule  # replaces a shipped rule of the same id
    phrases = list(models.AllowedPhrase.objects.values_list("phrase", flat=True))
    good_phrases = []
    for phrase in phrases:
        try:
            RuleSet((), [phrase])
        except RuleError as exc:
            log.error("allowed phrase %r left out: %s", phrase, exc)
            continue
        good_phrases.append(phrase)
    safety = SafetyFilter(RuleSet(rules.values(), [*allow, *good_phrases]), _shared_classifiers())
    default = NamedPolicy(DEFAULT_NAME, DEFAULT_POLICY)
    by_group: dict[int, NamedPolicy] = {}
    for row in models.Policy.objects.prefetch_related("classifier_models"):
        try:
            named = NamedPolicy(row.name, row.as_filter_policy())
        except (ValueError, ValidationError) as exc:  # saved around the form's checks
            log.error("moderation policy %s left out: %s", row.pk, exc)
            continue
        if row.group_id is None:
            default = named
        else:
            by_group[row.group_id] = named
    return Config(token, safety, default, by_group, tuple(broken))


def policy_for(user: User, config: Config | None = None) -> NamedPolicy:
    """The user's policy under `config` (the configuration in force now by default)."""
    config = config or current()
    group_ids = list(user.groups.values_list("id", flat=True)) if config.by_group else []
    return config.policy_for_groups(group_ids)
