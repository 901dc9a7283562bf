from django.urls import path

from webapp.inference.consumers import GenerationConsumer

websocket_urlpatterns = [
    path("ws/generations/<int:generation_id>/", GenerationConsumer.as_asgi()),
]
