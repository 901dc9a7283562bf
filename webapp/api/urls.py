from django.urls import path, re_path

from webapp.api import batch_views, studio_views, views

app_name = "api"

urlpatterns = [
    path("models", views.list_models, name="models"),
    path("models/<path:model_id>", views.retrieve_model, name="model"),
    path("chat/completions", views.chat_completions, name="chat_completions"),
    path("completions", views.completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("moderations", views.moderate, name="moderations"),
    path("files", batch_views.files, name="files"),
    path("files/<str:file_id>", batch_views.file_detail, name="file"),
    path("files/<str:file_id>/content", batch_views.file_content, name="file_content"),
    path("batches", batch_views.batches_, name="batches"),
    path("batches/<str:batch_id>", batch_views.batch_detail, name="batch"),
    path("batches/<str:batch_id>/cancel", batch_views.cancel_batch, name="cancel_batch"),
    path("atelier/summarize", studio_views.summarize, name="summarize"),
    path("atelier/translate", studio_views.translate, name="translate"),
    path("atelier/classify", studio_views.classify, name="classify"),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
