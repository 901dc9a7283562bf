from django.urls import path

from webapp.operations import views

app_name = "operations"

urlpatterns = [
    path("", views.operations, name="page"),
    path("state.json", views.operations_state, name="state"),
]
