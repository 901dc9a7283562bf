from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from webapp.accounts import services
from webapp.accounts.forms import SignUpForm


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
        if user.is_pending:
            messages.info(
                request,
                "Welcome! An administrator must approve your account before you can generate.",
            )
        return redirect("chat:home")
    return render(request, "accounts/signup.html", {"form": form})
