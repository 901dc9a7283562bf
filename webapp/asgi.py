"""ASGI entry point: HTTP through Django, WebSockets through Channels (origin-checked)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from webapp.chat.routing import websocket_urlpatterns as chat_websockets  # noqa: E402
from webapp.inference.routing import websocket_urlpatterns as generation_websockets  # noqa: E402
from webapp.jobs.routing import websocket_urlpatterns as job_websockets  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(chat_websockets + job_websockets + generation_websockets))
        ),
    }
)
