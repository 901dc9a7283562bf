from django.urls import path

from webapp.chat import views

app_name = "chat"
urlpatterns = [
    path("", views.home, name="home"),
    path("<int:conversation_id>/", views.conversation, name="conversation"),
]
