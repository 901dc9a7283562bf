from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model, usable_models
from webapp.inference.refusals import ModelUnavailable

pytestmark = pytest.mark.django_db


def entry(name: str, **fields: Any) -> ModelEntry:
    return ModelEntry.objects.create(
        name=name, task=fields.pop("task", "chat"), source="/nowhere", **fields
    )


def test_one_default_per_task() -> None:
    first = entry("a", is_default=True)
    second = entry("b", is_default=True)
    other_task = entry("c", task="summarize", is_default=True)
    first.refresh_from_db()
    assert not first.is_default and second.is_default
    other_task.refresh_from_db()
    assert other_task.is_default


def test_bad_entries_are_refused_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        ModelEntry(name="x", source=str(tmp_path / "missing")).full_clean()
    with pytest.raises(ValidationError, match="CPU only"):
        ModelEntry(
            name="y", source="org/model", quantization="int8_dynamic", device="cuda"
        ).full_clean()
    with pytest.raises(ValidationError, match="letters, digits"):
        ModelEntry(name="z", source="org/model", queue="bad queue!").full_clean()
    ModelEntry(name="ok", source=str(tmp_path)).full_clean()


def test_groups_limit_who_may_use_a_model(alice: Any, bob: Any) -> None:
    everyone = entry("everyone", is_default=True)
    staff_only = entry("staff-only")
    team = Group.objects.create(name="team")
    staff_only.allowed_groups.add(team)
    bob.groups.add(team)
    assert set(usable_models(alice, "chat")) == {everyone}
    assert set(usable_models(bob, "chat")) == {everyone, staff_only}
    with pytest.raises(ModelUnavailable):
        usable_model(alice, "chat", staff_only.pk)
    assert usable_model(bob, "chat", staff_only.pk) == staff_only
    assert usable_model(alice, "chat", None) == everyone


def test_disabled_and_wrong_task_models_are_not_usable(alice: Any) -> None:
    disabled = entry("off", enabled=False)
    summarizer = entry("sum", task="summarize")
    for model in (disabled, summarizer):
        with pytest.raises(ModelUnavailable):
            usable_model(alice, "chat", model.pk)
    with pytest.raises(ModelUnavailable, match="No chat model"):
        usable_model(alice, "chat", None)


def test_max_batch_defaults_per_device_and_is_bounded() -> None:
    default = entry("batched")
    assert default.batch_size("cpu") == 16 and default.batch_size("cuda") == 32
    default.max_batch = 1  # one at a time, as before batching
    assert default.batch_size("cuda") == 1
    for bad in (0, 257):
        default.max_batch = bad
        with pytest.raises(ValidationError) as refused:
            default.full_clean()
        assert "max_batch" in refused.value.message_dict


def test_the_admin_shows_max_batch_with_the_measured_batching_figures(make_user: Any) -> None:
    from django.test import Client

    rounds = {
        "1": {"aggregate": 20.0, "vs_one": 1.0, "ttft_p50": 0.1, "ttft_p95": 0.1},
        "16": {"aggregate": 64.5, "vs_one": 3.22, "ttft_p50": 0.8, "ttft_p95": 1.5},
    }
    measured = entry(
        "smol",
        max_batch=8,
        benchmark={"batching": {"cpu": {"machine": "test CPU", "measured_at": "2026-12-03",
                                        "sequential": 19.5, "rounds": rounds}}},
    )  # fmt: skip
    client = Client()
    client.force_login(make_user("root", role="admin"))
    page = client.get(f"/admin/catalog/modelentry/{measured.pk}/change/").content.decode()
    assert 'name="max_batch" value="8"' in page
    assert "cpu (test CPU), 2026-12-03: sequential generate() 19.5 tokens/s" in page
    assert "<td>16</td><td>64.5</td><td>3.22x</td><td>0.80 s</td><td>1.50 s</td>" in page
    # Batching figures are not taken for a device's quantization figures.
    assert "Not measured yet: run python bench/quantization.py" in page
    listing = client.get("/admin/catalog/modelentry/").content.decode()
    assert "max batch" in listing.lower()
