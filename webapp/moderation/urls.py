from django.urls import path

from webapp.moderation import views

app_name = "moderation"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("<int:event_id>/review/", views.review, name="review"),
    path("suspensions/", views.suspensions, name="suspensions"),
    path("suspensions/<int:suspension_id>/lift/", views.lift, name="lift"),
    path("audit/", views.audit, name="audit"),
    path("audit.csv", views.audit_csv, name="audit_csv"),
]
