"""bench/quantization.py's figures reach the catalog entry and the admin shows them; its
table and targets read the figures right. (The measuring itself is the benchmark's job.)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from bench import quantization
from webapp.catalog.models import ModelEntry

pytestmark = pytest.mark.django_db

ROWS: list[dict[str, Any]] = [
    {"mode": "none", "load_s": 2.0, "rss_mib": 600.0, "weights_mib": 500.0,
     "tokens_per_s": 20.0, "perplexity": 30.0, "decode_perplexity": 100.0, "unit": "tokens"},
    {"mode": "int8_dynamic", "load_s": 3.0, "rss_mib": 700.0, "weights_mib": 230.0,
     "tokens_per_s": 26.0, "perplexity": 90.0, "decode_perplexity": 130.0, "unit": "tokens"},
    {"mode": "bnb_4bit", "load_s": 9.0, "rss_mib": 700.0, "weights_mib": 160.0,
     "tokens_per_s": 4.0, "perplexity": 33.0, "decode_perplexity": 150.0, "unit": "tokens"},
    {"mode": "bnb_8bit", "error": "RuntimeError: no kernel"},
]  # fmt: skip


def test_table_and_targets_compare_each_mode_with_the_first() -> None:
    lines = quantization.table(ROWS)
    assert lines[2].startswith("| none | 2.00 | 600 | 500 | 100% | 20.0 | 1.00x | 30.000 |")
    assert "| 46% | 26.0 | 1.30x | 90.000 | +200.00% | 130.000 | +30.00% |" in lines[3]
    assert lines[5].startswith("| bnb_8bit | failed: RuntimeError: no kernel")
    notes = quantization.targets(ROWS, argparse.Namespace(window=512))
    assert notes[0].startswith("int8_dynamic: 1.30x tokens/s (target >= 2.5x: MISSED)")
    assert notes[1] == "bnb_4bit weights: 32% of unquantized (target <= 35%): met"


def test_stored_figures_appear_on_the_entry_and_in_the_admin(
    tmp_path: Path, make_user: Any
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    entry = ModelEntry.objects.create(name="smol", task="chat", source=str(folder))
    other = ModelEntry.objects.create(name="other", task="chat", source=str(tmp_path / "x"))
    figures = {"device": "cpu", "machine": "test CPU", "measured_at": "2026-11-24",
               "unit": "tokens", "modes": {r["mode"]: r for r in ROWS}}  # fmt: skip
    assert quantization.store(folder, "transformers", figures) == 1
    entry.refresh_from_db()
    other.refresh_from_db()
    assert entry.benchmark == {"cpu": figures} and other.benchmark is None

    client = Client()
    client.force_login(make_user("root", role="admin"))
    page = client.get(f"/admin/catalog/modelentry/{entry.pk}/change/").content.decode()
    assert "cpu (test CPU), 2026-11-24" in page
    assert "<td>int8_dynamic</td><td>3.00</td><td>230</td><td>26.0</td><td>1.30x</td>" in page
    assert "<td>bnb_8bit</td><td>failed</td>" in page
    empty = client.get(f"/admin/catalog/modelentry/{other.pk}/change/").content.decode()
    assert "Not measured yet" in empty
