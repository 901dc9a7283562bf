from django.urls import path

from webapp.api import pages

app_name = "api_keys"
urlpatterns = [
    path("", pages.key_list, name="list"),
    path("<int:key_id>/revoke/", pages.revoke, name="revoke"),
]
