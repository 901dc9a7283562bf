"""Template helpers for moderation: which of the shown chat messages were blocked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django import template

from webapp.moderation import services

register = template.Library()


@register.simple_tag
def blocked_inputs(shown: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """{message id: category} for the user messages among `shown` that were blocked."""
    return services.blocked_inputs(item["message"].pk for item in shown)


@register.filter
def lookup(mapping: Mapping[Any, Any], key: Any) -> Any:
    return mapping.get(key, "") if mapping else ""
