"""How the usage pages write their figures."""

from __future__ import annotations

from django import template

register = template.Library()
NONE = "\N{EN DASH}"


@register.filter
def figure(value: int | None) -> str:
    """12,345."""
    return NONE if value is None else f"{value:,}"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.2f} s"


@register.filter
def rate(value: float | None) -> str:
    return NONE if value is None else f"{value:,.1f}"
