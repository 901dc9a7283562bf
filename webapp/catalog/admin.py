from typing import Any

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from webapp.catalog.models import ModelEntry


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin[ModelEntry]):
    list_display = (
        "name",
        "task",
        "backend",
        "quantization",
        "device",
        "queue",
        "max_batch",
        "enabled",
        "is_default",
        "status",
    )
    list_filter = ("task", "backend", "quantization", "enabled", "preparing")
    search_fields = ("name", "source", "description")
    filter_horizontal = ("allowed_groups",)
    readonly_fields = (
        "preparing",
        "last_error",
        "last_error_at",
        "last_loaded_at",
        "updated_at",
        "quantization_figures",
        "batching_figures",
    )
    exclude = ("benchmark",)

    @admin.display(description="worker status")
    def status(self, entry: ModelEntry) -> str:
        if entry.preparing:
            return "being prepared"
        if entry.last_error:
            return f"error: {entry.last_error[:120]}"
        if entry.last_loaded_at:
            return "loaded"
        return "not loaded yet"

    @admin.display(description="batching, measured")
    def batching_figures(self, entry: ModelEntry) -> str:
        """The latest bench/batching.py figures for this model: aggregate tokens/s and time
        to first token by concurrent requests, to choose max_batch by."""
        measured = (entry.benchmark or {}).get("batching", {})
        if not measured:
            return "Not measured yet: run python bench/batching.py --store"
        tables = []
        for device, run in sorted(measured.items()):
            rows = format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        n,
                        f"{r['aggregate']:.1f}",
                        f"{r['vs_one']:.2f}x",
                        f"{r['ttft_p50']:.2f} s",
                        f"{r['ttft_p95']:.2f} s",
                    )
                    for n, r in sorted(run.get("rounds", {}).items(), key=lambda kv: int(kv[0]))
                ),
            )
            tables.append(
                format_html(
                    "<p>{} ({}), {}: sequential generate() {} tokens/s</p><table><thead><tr>"
                    "<th>concurrent</th><th>tokens/s, all</th><th>vs one</th><th>first token "
                    "p50</th><th>p95</th></tr></thead><tbody>{}</tbody></table>",
                    device,
                    run.get("machine", "?"),
                    run.get("measured_at", "?"),
                    f"{run.get('sequential', 0.0):.1f}",
                    rows,
                )
            )
        return format_html_join("", "{}", ((table,) for table in tables))

    @admin.display(description="quantization, measured")
    def quantization_figures(self, entry: ModelEntry) -> str:
        """The latest bench/quantization.py figures for this model's folder, per device."""
        figures = {k: v for k, v in (entry.benchmark or {}).items() if k != "batching"}
        if not figures:
            return "Not measured yet: run python bench/quantization.py --store"
        tables = []
        for device, run in sorted(figures.items()):
            modes = run.get("modes", {})
            base = modes.get("none", {})
            rows = format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (_figure_row(mode, values, base) for mode, values in modes.items()),
            )
            tables.append(
                format_html(
                    "<p>{} ({}), {}</p><table><thead><tr><th>mode</th><th>load s</th>"
                    "<th>weights MiB</th><th>{}/s</th><th>vs none</th><th>perplexity</th>"
                    "</tr></thead><tbody>{}</tbody></table>",
                    device,
                    run.get("machine", "?"),
                    run.get("measured_at", "?"),
                    run.get("unit", "tokens"),
                    rows,
                )
            )
        return format_html_join("", "{}", ((table,) for table in tables))


def _figure_row(mode: str, values: dict[str, Any], base: dict[str, Any]) -> tuple[str, ...]:
    if "error" in values:
        return (mode, "failed", str(values["error"])[:200], "", "", "")
    speed = values.get("tokens_per_s", 0.0)
    ratio = f"{speed / base['tokens_per_s']:.2f}x" if base.get("tokens_per_s") else ""
    return (
        mode,
        f"{values.get('load_s', 0.0):.2f}",
        f"{values.get('weights_mib', 0.0):.0f}",
        f"{speed:.1f}",
        ratio,
        f"{values.get('perplexity', 0.0):.3f}",
    )
