"""The new-job form's two steps: the file, then how to read it and what to do with it."""

from __future__ import annotations

from typing import Any

from django import forms

from webapp.catalog.models import ModelEntry
from webapp.jobs.inputs import Format, Inspection, TextMode
from webapp.jobs.models import DOCUMENT_TASKS, JobTask

# The target languages offered (ISO 639-1). generation.languages.LANGUAGES is the full
# list, but importing it loads torch, which the web process never does; a test checks
# that these are all in it. A model that cannot translate into one fails the items with
# the library's clear error.
TARGET_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}
LANGUAGE_CHOICES: list[tuple[str, str]] = sorted(TARGET_LANGUAGES.items(), key=lambda kv: kv[1])
LENGTH_CHOICES = [("short", "Short"), ("medium", "Medium"), ("long", "Long")]


class UploadForm(forms.Form):
    task = forms.ChoiceField(
        choices=[(t.value, t.label) for t in DOCUMENT_TASKS], initial=JobTask.SUMMARIZE
    )
    file = forms.FileField(
        help_text="CSV, JSON Lines (.jsonl), text (.txt, .md) or a .zip of .txt/.md files."
    )


class ConfigureForm(forms.Form):
    """Choices that depend on the file (column, id column, text mode) and on the task
    (length or target language), and the model."""

    column = forms.ChoiceField(required=False, label="Text column")
    id_column = forms.ChoiceField(required=False, label="Id column (optional)")
    text_mode = forms.ChoiceField(
        required=False,
        choices=[(TextMode.LINES, "One document per line"), (TextMode.WHOLE, "The whole file")],
        initial=TextMode.LINES,
        widget=forms.RadioSelect,
        label="Documents",
    )
    model = forms.ModelChoiceField(queryset=ModelEntry.objects.none(), empty_label=None)
    length = forms.ChoiceField(choices=LENGTH_CHOICES, initial="short", required=False)
    target = forms.ChoiceField(
        choices=LANGUAGE_CHOICES,
        initial="fr",
        required=False,
        label="Translate into",
    )
    source = forms.ChoiceField(
        choices=[("", "Detect"), *LANGUAGE_CHOICES],
        required=False,
        label="From",
    )

    def __init__(
        self, *args: Any, inspection: Inspection, task: str, models: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self.inspection = inspection
        model_field = self.fields["model"]
        assert isinstance(model_field, forms.ModelChoiceField)
        model_field.queryset = models
        default = models.filter(is_default=True).first()
        if default is not None:
            model_field.initial = default.pk
        columns = inspection.columns
        if inspection.format in (Format.CSV, Format.JSONL):
            noun = "column" if inspection.format == Format.CSV else "field"
            self.fields["column"].label = f"Text {noun}"
            self.fields["id_column"].label = f"Id {noun} (optional)"
            self.fields["column"].choices = [(c, c) for c in columns]  # type: ignore[attr-defined]
            self.fields["column"].initial = inspection.suggested
            self.fields["id_column"].choices = [("", "None: number them")] + [  # type: ignore[attr-defined]
                (c, c) for c in columns
            ]
            self.fields["id_column"].initial = "id" if "id" in columns else ""
            self.fields["column"].required = True
        else:
            del self.fields["column"], self.fields["id_column"]
        if inspection.format != Format.TXT:
            del self.fields["text_mode"]
        if task == JobTask.TRANSLATE:
            del self.fields["length"]
            self.fields["target"].required = True
        else:
            del self.fields["target"], self.fields["source"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        column, id_column = data.get("column"), data.get("id_column")
        if column and id_column and column == id_column:
            self.add_error("id_column", "The id column must not be the text column.")
        target, source = data.get("target"), data.get("source")
        if target and source and target == source:
            self.add_error("source", "The source and target languages are the same.")
        return data
