"""bench/gpu_batching.py's --quick path on CPU, so the one run on a lent GPU does not fail
on a typo: random models built from a config, saved and loaded through the real loading
path, the Batcher and generate_batch measured, the figures written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gpu_batching
from tests.tiny.causal import build_tiny_causal_lm


def test_quick_run_measures_every_size_and_writes_the_figures(tmp_path: Path) -> None:
    base = build_tiny_causal_lm(tmp_path / "base")  # a config and a tokenizer
    out = tmp_path / "out"
    runs = "135m:fp32,paged:135m:fp32"
    argv = ["--quick", "--device", "cpu", "--base", str(base), "--out", str(out)]
    assert gpu_batching.main([*argv, "--runs", runs]) == 0

    result = json.loads((out / "gpu_batching.json").read_text())
    assert result["environment"]["device"] == "cpu"
    (run,) = result["runs"]
    assert (run["shape"], run["mode"], run["dtype"]) == ("135m", "fp32", "torch.float32")
    assert run["model"]["num_hidden_layers"] == 2  # the quick shape, built from the base
    assert run["baseline"]["n"] == 2 and run["baseline"]["tokens_per_s"] > 0
    assert [row["n"] for row in run["sizes"]] == [1, 2, 4]
    for row in run["sizes"]:
        # no eos id: every request ran its 8 tokens, all rows decoded together, and the
        # greedy fp32 texts equal generate()'s alone
        assert row["exact"] == row["n"] == row["widest"], row
        assert row["errors"] == [] and row["tokens_per_s"] > 0
        assert row["same"] == f"{min(row['n'], 2)}/{min(row['n'], 2)}"
    assert run["sizes"][0]["x_one"] == 1.0
    paged = run["paged"]
    assert "error" not in paged, paged
    assert paged["exact"] == 4 and paged["same"] == "2/2"
    assert run["notes"] == [] and "error" not in run
