from django.urls import path, re_path

from webapp.jobs import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/<int:upload_id>/", views.configure, name="configure"),
    path("<int:job_id>/", views.job_page, name="job"),
    re_path(
        r"^(?P<job_id>[0-9]+)/(?P<name>pause|resume|cancel|retry)/$", views.action, name="action"
    ),
    re_path(r"^(?P<job_id>[0-9]+)/results\.(?P<kind>csv|jsonl)$", views.download, name="results"),
]
