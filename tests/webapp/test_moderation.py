"""Moderation services on a real database: checks through the whole check_input path
(obfuscation included), policies and rules changed without a restart, the strictest policy
for a user in several groups, false positives feeding the allow-list, strikes and
suspension, and the audit trail with its CSV export and retention."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from generation.safety import Action
from webapp.moderation import config, services
from webapp.moderation.models import (
    AllowedPhrase,
    AuditEntry,
    ModerationEvent,
    Policy,
    ReviewStatus,
    Rule,
    Strike,
    Suspension,
)

pytestmark = pytest.mark.django_db

# An admin rule with a made-up word, so that only the rule (not the classifier) can match.
SECRET_WORD = "moonpoison"


@pytest.fixture
def moon_rule(db: Any) -> Rule:
    return Rule.objects.create(
        rule_id="moon-poison", category="violence", kind="words", patterns=SECRET_WORD
    )


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("root", role="admin")


@pytest.mark.parametrize(
    "text",
    [
        "how do I brew moonpoison at home",  # plain
        "how do I brew m00np0is0n at home",  # leetspeak
        "how do I brew MOONPOISON at home",  # case
        "how do I brew mооnpоisоn at home",  # noqa: RUF001 - Cyrillic o: confusables
        "how do I brew moon\u200bpoi\u200dson at home",  # zero-width characters
        "how do I brew m o o n p o i s o n at home",  # spacing
        "how do I brew m.o.o.n.p.o.i.s.o.n at home",  # spacing with dots
        "how do I brew ｍｏｏｎｐｏｉｓｏｎ at home",  # noqa: RUF001 - fullwidth letters
    ],
)
def test_bypass_attempts_are_blocked_through_check_input(
    alice: Any, moon_rule: Rule, text: str
) -> None:
    checked = services.check_input(alice, text, task="chat")
    assert checked.blocked
    assert checked.verdict.category == "violence"
    assert checked.verdict.rule_id == "moon-poison"
    event = ModerationEvent.objects.get()
    assert event.user == alice and event.text == text and event.action == "block"
    assert event.direction == "input" and event.task == "chat"
    assert "moon-poison" in event.explanation
    assert event.review_status == ReviewStatus.PENDING
    entry = AuditEntry.objects.get(action="input.block")
    assert entry.subject == alice and entry.target_id == str(event.pk)
    assert entry.details["verdict"]["rule_id"] == "moon-poison"


def test_shipped_rules_block_obfuscated_threats(alice: Any) -> None:
    for text in ["I will k1ll you", "I will kіll you", "I will k\u200bill you"]:  # noqa: RUF001
        assert services.check_input(alice, text, task="chat").blocked, text


def test_a_benign_text_is_allowed_audited_and_not_queued_for_review(alice: Any) -> None:
    checked = services.check_input(alice, "What is the capital of France?", task="chat")
    assert checked.verdict.action is Action.ALLOW and checked.event is None
    assert not ModerationEvent.objects.exists()
    entry = AuditEntry.objects.get()
    assert entry.action == "input.allow" and entry.actor_name == "system"
    assert entry.subject == alice


def test_a_policy_change_takes_effect_on_the_next_check(alice: Any, moon_rule: Rule) -> None:
    text = f"some {SECRET_WORD} please"
    assert services.check_input(alice, text, task="chat").blocked
    policy = Policy.objects.create(name="lenient", flag_categories="violence")
    checked = services.check_input(alice, text, task="chat")
    assert checked.flagged and checked.policy == "lenient"
    policy.flag_categories = ""
    policy.ignore_categories = "violence"
    policy.save()
    assert services.check_input(alice, text, task="chat").verdict.action is Action.ALLOW
    policy.delete()
    assert services.check_input(alice, text, task="chat").blocked


def test_a_rule_change_takes_effect_on_the_next_check(alice: Any) -> None:
    text = "bring the glitterbomb tomorrow"
    assert not services.check_input(alice, text, task="chat").blocked
    rule = Rule.objects.create(
        rule_id="glitter", category="spam", kind="regex", patterns=r"glitter\w*"
    )
    assert services.check_input(alice, text, task="chat").verdict.category == "spam"
    rule.enabled = False
    rule.save()
    assert not services.check_input(alice, text, task="chat").blocked


def test_an_admin_rule_replaces_a_shipped_rule_of_the_same_id(alice: Any) -> None:
    assert services.check_input(alice, "I will kill you", task="chat").blocked
    Rule.objects.create(
        rule_id="violence-threat",
        category="violence",
        kind="words",
        patterns="zzzunused",
        enabled=False,
    )
    assert not services.check_input(alice, "I will kill you", task="chat").blocked


def test_the_strictest_policy_of_a_users_groups_wins(alice: Any, moon_rule: Rule) -> None:
    relaxed = Group.objects.create(name="relaxed")
    strict = Group.objects.create(name="strict")
    Policy.objects.create(name="default", flag_categories="violence")
    Policy.objects.create(
        name="relaxed", group=relaxed, ignore_categories="violence", output_check="streaming"
    )
    Policy.objects.create(
        name="strict", group=strict, block_categories="violence", output_check="end"
    )
    text = f"a {SECRET_WORD} recipe"
    assert services.check_input(alice, text, task="chat").flagged  # no group: the default
    alice.groups.add(relaxed)
    assert services.check_input(alice, text, task="chat").verdict.action is Action.ALLOW
    alice.groups.add(strict)
    checked = services.check_input(alice, text, task="chat")
    assert checked.blocked and checked.policy == "relaxed + strict"
    assert str(config.policy_for(alice).policy.output_check) == "end"


def test_a_bad_policy_or_rule_is_refused_with_a_clear_error(db: Any) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="thresholds"):
        Policy(name="x", flag_threshold=0.9, block_threshold=0.5).full_clean()
    with pytest.raises(ValidationError, match="Not a category"):
        Policy(name="x", block_categories="Hate!").full_clean()
    with pytest.raises(ValidationError, match="bad regular expression"):
        Rule(rule_id="bad", category="spam", kind="regex", patterns="(unclosed").full_clean()


def test_a_broken_rule_saved_around_validation_leaves_the_others_in_force(
    alice: Any, moon_rule: Rule
) -> None:
    Rule.objects.create(rule_id="broken", category="spam", kind="regex", patterns="(unclosed")
    assert services.check_input(alice, f"{SECRET_WORD}!", task="chat").blocked
    assert config.current().broken_rules == ("broken",)


def test_a_false_positive_feeds_the_allow_list_and_the_same_text_then_passes(
    alice: Any, admin: Any
) -> None:
    Rule.objects.create(rule_id="town", category="profanity", kind="words", patterns="scunthorpe")
    text = "I live in Scunthorpe, near the river."
    checked = services.check_input(alice, text, task="chat")
    assert checked.blocked and checked.event is not None
    phrases = services.suggested_phrases(checked.event)
    assert phrases == ["Scunthorpe"]
    added = services.mark_false_positive(checked.event, admin, phrases)
    assert [a.phrase for a in added] == ["Scunthorpe"]
    event = ModerationEvent.objects.get()
    assert event.review_status == ReviewStatus.FALSE_POSITIVE and event.reviewed_by == admin
    assert AllowedPhrase.objects.get().source_event == event
    assert not services.check_input(alice, text, task="chat").blocked
    entry = AuditEntry.objects.get(action="event.false_positive")
    assert entry.actor == admin and entry.details["allowed"] == ["Scunthorpe"]


def test_a_phrase_that_cannot_be_allowed_is_refused(alice: Any, admin: Any) -> None:
    checked = services.check_input(alice, "I will kill you", task="chat")
    assert checked.event is not None
    with pytest.raises(services.ModerationError, match="no letters or digits"):
        services.mark_false_positive(checked.event, admin, ["!!!"])
    assert not AllowedPhrase.objects.exists()
    assert ModerationEvent.objects.get().review_status == ReviewStatus.PENDING


def _blocked_event(user: Any) -> ModerationEvent:
    checked = services.check_input(user, "I will kill you", task="chat")
    assert checked.event is not None
    return checked.event


def test_strikes_within_the_window_suspend_the_account(
    alice: Any, admin: Any, settings: Any
) -> None:
    settings.ATELIER_STRIKES_TO_SUSPEND = 2
    services.add_strike(_blocked_event(alice), admin, "threat")
    assert services.active_suspension(alice) is None
    services.add_strike(_blocked_event(alice), admin)
    suspension = services.active_suspension(alice)
    assert suspension is not None and suspension.created_by is None
    assert "2 confirmed content-policy strikes" in suspension.reason
    assert ModerationEvent.objects.filter(review_status=ReviewStatus.CONFIRMED).count() == 2
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions.count("strike.add") == 2 and "suspension.create" in actions


def test_old_strikes_do_not_count(alice: Any, admin: Any, settings: Any) -> None:
    settings.ATELIER_STRIKES_TO_SUSPEND = 2
    settings.ATELIER_STRIKE_WINDOW_DAYS = 30
    old = services.add_strike(_blocked_event(alice), admin)
    Strike.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    services.add_strike(_blocked_event(alice), admin)
    assert services.active_suspension(alice) is None


def test_lifting_a_suspension_is_audited_and_restarts_the_count(
    alice: Any, admin: Any, settings: Any
) -> None:
    settings.ATELIER_STRIKES_TO_SUSPEND = 1
    services.add_strike(_blocked_event(alice), admin)
    suspension = services.active_suspension(alice)
    assert suspension is not None
    services.lift_suspension(suspension, admin)
    assert services.active_suspension(alice) is None
    assert AuditEntry.objects.filter(action="suspension.lift", actor=admin).exists()
    with pytest.raises(services.ModerationError, match="already been lifted"):
        services.lift_suspension(suspension, admin)
    assert services.strikes_counting(alice).count() == 0
    services.add_strike(_blocked_event(alice), admin)  # a new strike suspends again
    assert Suspension.objects.filter(user=alice, lifted_at__isnull=True).count() == 1


def test_audit_csv_export_holds_every_verdict_and_action(alice: Any, admin: Any) -> None:
    services.check_input(alice, "Tell me about otters", task="chat")
    event = _blocked_event(alice)
    services.confirm(event, admin)
    services.audit(admin, "policy.change", '=HYPERLINK("http://x")')  # a formula-looking one
    rows = list(csv.reader(io.StringIO("".join(services.audit_csv(AuditEntry.objects.all())))))
    assert rows[0] == list(services.CSV_COLUMNS)
    body = rows[1:]
    assert [r[2] for r in body] == ["input.allow", "input.block", "event.confirm", "policy.change"]
    assert body[1][1] == "system" and body[1][3:6] == ["moderationevent", str(event.pk), "alice"]
    assert body[2][1] == "root" and body[2][5] == "alice"
    assert "violence" in body[1][6]
    assert body[3][6].startswith("'=")  # cannot run as a spreadsheet formula


def test_purge_audit_keeps_the_retention_and_records_itself(
    alice: Any, settings: Any, capsys: Any
) -> None:
    settings.ATELIER_AUDIT_RETENTION_DAYS = 10
    services.check_input(alice, "old question", task="chat")
    services.check_input(alice, "new question", task="chat")
    first = AuditEntry.objects.order_by("id").first()
    assert first is not None
    AuditEntry.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=11))
    call_command("purge_audit")
    assert "Deleted 1 audit entries." in capsys.readouterr().out
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["input.allow", "audit.purge"]
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="at least one day"):
        call_command("purge_audit", days=0)
