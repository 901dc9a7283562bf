"""Who may read /metrics: nobody unless configured; then a request with the bearer token
(ATELIER_METRICS_TOKEN), or from an allowed address or network (ATELIER_METRICS_ALLOW)."""

from __future__ import annotations

import hmac
import ipaddress
from enum import Enum

from django.conf import settings
from django.http import HttpRequest


class Access(Enum):
    CLOSED = "closed"  # neither a token nor addresses configured: /metrics does not exist
    DENIED = "denied"
    ALLOWED = "allowed"


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _allowed_address(address: str, allowed: list[str]) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if client in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # a mistyped entry allows nobody
            continue
    return False


def metrics_access(request: HttpRequest) -> Access:
    return access_for(request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR", ""))


def access_for(authorization: str, address: str) -> Access:
    """A request's access from its Authorization header and its client's address."""
    token: str = settings.ATELIER_METRICS_TOKEN
    allowed: list[str] = settings.ATELIER_METRICS_ALLOW
    if not token and not allowed:
        return Access.CLOSED
    given = _bearer(authorization)
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return Access.ALLOWED
    if allowed and _allowed_address(address, allowed):
        return Access.ALLOWED
    return Access.DENIED
