from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from webapp.accounts import services
from webapp.accounts.models import Role, User

pytestmark = pytest.mark.django_db


def sign_up(client: Client, username: str = "newbie") -> Any:
    return client.post(
        reverse("signup"),
        {
            "username": username,
            "email": "",
            "password1": "a-long-passphrase-9",
            "password2": "a-long-passphrase-9",
        },
    )


def test_sign_up_makes_a_pending_user_who_is_logged_in_and_told_why() -> None:
    client = Client()
    response = sign_up(client)
    assert response.status_code == 302
    user = User.objects.get(username="newbie")
    assert user.role == Role.PENDING and not user.can_generate
    page = client.get(reverse("chat:home"))
    assert page.status_code == 200
    assert "waiting for an administrator" in page.content.decode()


@override_settings(ATELIER_OPEN_SIGNUP=True)
def test_open_sign_up_makes_a_full_user() -> None:
    sign_up(Client(), "opener")
    assert User.objects.get(username="opener").can_generate


def test_admin_approves_pending_users_from_the_admin_list() -> None:
    pending = User.objects.create_user("p1", password="x-long-passphrase", role=Role.PENDING)
    User.objects.create_superuser("root", password="x-long-passphrase")
    client = Client()
    client.login(username="root", password="x-long-passphrase")
    response = client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "approve_users", "_selected_action": [pending.pk]},
        follow=True,
    )
    assert "Approved 1 user(s)." in response.content.decode()
    pending.refresh_from_db()
    assert pending.role == Role.USER and pending.can_generate


def test_superuser_is_admin_role_and_admin_role_is_staff() -> None:
    assert User.objects.create_superuser("root", password="x-long-passphrase").role == Role.ADMIN
    promoted = User.objects.create_user("boss", password="x-long-passphrase", role=Role.ADMIN)
    assert promoted.is_staff and promoted.is_superuser


def test_ensure_admin_creates_once_and_shows_a_generated_password_once() -> None:
    user, password = services.ensure_admin("admin", None)
    assert password and user.check_password(password)
    again, second = services.ensure_admin("admin", None)
    assert again.pk == user.pk and second is None
    assert User.objects.filter(role=Role.ADMIN).count() == 1


def test_ensure_admin_takes_the_password_from_the_environment_value() -> None:
    user, shown = services.ensure_admin("admin", "chosen-pass-123")
    assert shown is None and user.check_password("chosen-pass-123")


def test_login_logout_and_password_change() -> None:
    User.objects.create_user("carol", password="old-passphrase-1", role=Role.USER)
    client = Client()
    assert client.get(reverse("chat:home")).status_code == 302  # login required
    response = client.post(reverse("login"), {"username": "carol", "password": "old-passphrase-1"})
    assert response.status_code == 302
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "old-passphrase-1",
            "new_password1": "new-passphrase-2",
            "new_password2": "new-passphrase-2",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(username="carol").check_password("new-passphrase-2")
    client.post(reverse("logout"))
    assert client.get(reverse("chat:home")).status_code == 302
