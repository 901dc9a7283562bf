"""The API keys page: create (the secret shown once), list and revoke one's own keys;
admins see and revoke everyone's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from webapp.accounts.models import Role, User
from webapp.api import keys
from webapp.api.models import ApiKey

EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
]


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. 'notebook'.")
    expires_in = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


@login_required
def key_list(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = KeyForm(request.POST or None)
    secret = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            days = form.cleaned_data["expires_in"]
            expires = timezone.now() + timedelta(days=int(days)) if days else None
            try:
                created = keys.create_key(user, form.cleaned_data["name"], expires)
            except keys.KeyActionError as exc:
                form.add_error(None, str(exc))
                status = 400
            else:
                secret = created.secret
                form = KeyForm()
        else:
            status = 400
    context: dict[str, Any] = {
        "form": form,
        "secret": secret,
        "keys": keys.keys_of(user),
        "may_have_keys": keys.may_have_keys(user),
        "everyone": keys.all_keys()[:500] if user.role == Role.ADMIN else None,
        "base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "api/keys.html", context, status=status)


@login_required
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    user = _user(request)
    key = ApiKey.objects.filter(pk=key_id).select_related("user").first()
    if key is None or (key.user_id != user.pk and user.role != Role.ADMIN):
        raise Http404("No such key.")
    keys.revoke(key, user)
    return redirect("api_keys:list")
