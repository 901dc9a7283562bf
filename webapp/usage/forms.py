"""The admin dashboard's filters, read from the query string."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib.auth.models import Group
from django.utils import timezone

from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Source
from webapp.usage.services import By, Filters, last_days

DEFAULT_DAYS = 30
MAX_DAYS = 731  # two years: the aggregation stays in the database, but keep a page a page


class DashboardFilters(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    user = forms.CharField(
        required=False,
        max_length=150,
        widget=forms.TextInput(attrs={"list": "usernames", "placeholder": "username"}),
    )
    group = forms.ModelChoiceField(
        Group.objects.order_by("name"), required=False, empty_label="any group"
    )
    model = forms.ChoiceField(required=False)
    source = forms.ChoiceField(
        required=False, label="Front door", choices=[("", "any front door"), *Source.choices]
    )
    by = forms.ChoiceField(
        required=False,
        label="Table by",
        choices=[(By.DAY, "day"), (By.USER, "user"), (By.GROUP, "group"), (By.MODEL, "model")],
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        names = ModelEntry.objects.order_by("name").values_list("name", flat=True)
        chosen = self.data.get("model", "")
        extra = [chosen] if chosen and chosen not in names else []  # a model since removed
        field = self.fields["model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "any model"), *((n, n) for n in [*names, *extra])]

    def clean_user(self) -> User | None:
        name = self.cleaned_data["user"].strip()
        if not name:
            return None
        try:
            return User.objects.get(username=name)
        except User.DoesNotExist:
            raise forms.ValidationError(f"No user is called {name}.") from None

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        start: dt.date | None = data.get("start")
        end: dt.date | None = data.get("end")
        if start is None:  # the 30 days up to the end, or up to today
            start = last_days(DEFAULT_DAYS, end)[0]
        if end is None:  # 30 days from the start, never past today
            end = min(timezone.localdate(), start + dt.timedelta(days=DEFAULT_DAYS - 1))
        if end < start:
            raise forms.ValidationError("The end comes before the start.")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data

    def filters(self) -> Filters:
        """The filters asked for, or the last 30 days of everything if they are not valid."""
        if not self.is_valid():
            return Filters(*last_days(DEFAULT_DAYS))
        data = self.cleaned_data
        user, group = data["user"], data["group"]
        return Filters(
            start=data["start"],
            end=data["end"],
            user_id=user.pk if user else None,
            group_id=group.pk if group else None,
            model_name=data["model"] or "",
            source=data["source"] or "",
        )

    def table_by(self) -> By:
        return By(self.cleaned_data.get("by") or By.DAY) if self.is_valid() else By.DAY
