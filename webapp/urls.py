from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView

from webapp.operations.views import metrics


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="chat:home", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/", include("webapp.accounts.urls")),
    path("chat/", include("webapp.chat.urls")),
    path("jobs/", include("webapp.jobs.urls")),
    path("moderation/", include("webapp.moderation.urls")),
    path("studio/", include("webapp.studio.urls")),
    path("api-keys/", include("webapp.api.page_urls")),
    path("usage/", include("webapp.usage.urls")),
    path("v1/", include("webapp.api.urls")),
    path("operations/", include("webapp.operations.urls")),
    path("metrics", metrics, name="metrics"),
    path("healthz", healthz),
]
