from django.urls import path

from webapp.usage import views

app_name = "usage"
urlpatterns = [
    path("", views.mine, name="mine"),
    path("admin/", views.dashboard, name="dashboard"),
    path("admin/usage.csv", views.dashboard_csv, name="dashboard_csv"),
]
