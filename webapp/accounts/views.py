from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from webapp.accounts import services
from webapp.accounts.forms import SignUpForm
from webapp.accounts.models import Role, User


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.sign_up(
            form.cleaned_data["username"],
            form.cleaned_data["password1"],
            form.cleaned_data["email"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # A pending user is told once, by the notice on the page they land on.
        return redirect("chat:home")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
@require_POST
def theme(request: HttpRequest) -> HttpResponse:
    """Remember the colour theme (system, light or dark); 204 for the page's script,
    else back to the page the form was on."""
    user = request.user
    assert isinstance(user, User)
    try:
        services.set_theme(user, request.POST.get("theme", ""))
    except ValueError:
        return HttpResponse("Unknown theme.", status=400, content_type="text/plain")
    if request.headers.get("X-Requested-With") == "fetch":
        return HttpResponse(status=204)
    back = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure())
    return redirect(back if back and allowed else "chat:home")


def _is_admin(user: object) -> bool:
    return isinstance(user, User) and user.is_active and user.role == Role.ADMIN


@login_required
@require_http_methods(["GET", "POST"])
def approvals(request: HttpRequest) -> HttpResponse:
    """Sign-ups waiting for an admin: approve or refuse them, one or all at once."""
    if not _is_admin(request.user):
        raise PermissionDenied("Only admins approve accounts.")
    waiting = services.waiting_for_approval()
    if request.method == "POST":
        chosen = list(waiting.filter(pk__in=request.POST.getlist("user")))
        if not chosen:
            messages.error(request, "Choose at least one account.")
        elif request.POST.get("action") == "approve":
            count = services.approve(chosen)
            messages.success(request, f"Approved {_accounts(count)}: they can generate now.")
        elif request.POST.get("action") == "refuse":
            count = services.refuse(chosen)
            messages.success(
                request, f"Refused {_accounts(count)}: disabled (Admin → Users can undo it)."
            )
        else:
            messages.error(request, "Choose Approve or Refuse.")
        return redirect("approvals")
    return render(request, "accounts/approvals.html", {"waiting": waiting})


def _accounts(count: int) -> str:
    return f"{count} account{'' if count == 1 else 's'}"
