from django.urls import path, re_path

from webapp.chat import views

app_name = "chat"
urlpatterns = [
    path("", views.home, name="home"),
    path("<int:conversation_id>/", views.conversation, name="conversation"),
    path("<int:conversation_id>/title/", views.title, name="title"),
    path("<int:conversation_id>/rename/", views.rename, name="rename"),
    path("<int:conversation_id>/delete/", views.delete, name="delete"),
    path("<int:conversation_id>/select/", views.select, name="select"),
    re_path(
        r"^(?P<conversation_id>[0-9]+)/export\.(?P<kind>md|json)$", views.export, name="export"
    ),
    path("import/", views.import_conversation, name="import"),
    path("code.css", views.code_stylesheet, name="code_css"),
]
