from django.urls import path

from webapp.studio import views

app_name = "studio"
urlpatterns = [
    path("summarize/", views.summarize, name="summarize"),
    path("translate/", views.translate, name="translate"),
    path("classify/", views.classify, name="classify"),
    path("history/", views.history, name="history"),
    path("result/<int:generation_id>/", views.result, name="result"),
    path("result/<int:generation_id>/image", views.image, name="image"),
    path("result/<int:generation_id>/download.txt", views.download, name="download"),
    path("result/<int:generation_id>/delete/", views.delete, name="delete"),
]
