"""benchmarks/imecd_dependence.py on the tiny dataset: the figures it reports, their ranges, and
that the old gap-fill (lambda 0.001) reads x_t far less than the default (lambda 1)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm.smoke import tiny_settings

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "imecd_dependence.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("imecd_dependence", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_topk_overlap_counts_shared_items(script):
    a = torch.tensor([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    b = torch.tensor([[5.0, 4, 0, 9, 1], [5, 4, 3, 2, 1]])
    # Row 0: {0, 1} against {3, 0}: one shared; row 1: {4, 3} against {0, 1}: none.
    assert script.topk_overlap(a, b, 2) == pytest.approx(0.25)
    assert script.topk_overlap(a, a, 3) == 1.0


def test_measure_reports_every_figure(script, tiny_root, run_in_tmp, capsys):
    common = {
        **tiny_config(tiny_root, hidden_size=16, n_heads=2, metrics=["NDCG"], topk=[5]),
        **tiny_settings("IMECD"),
        "valid_metric": "NDCG@5",
        "seed": 2020,
    }
    rows = {}
    for text in script.DEFAULT_VARIANTS:
        label, settings = script._variant(text, common)
        rows[label] = script.measure(TINY, label, settings, epochs=1, k=5)
    keys = {"zero", "noise_x10", "seed_overlap", "one_vs_T_overlap", "valid_score", "branches"}
    for row in rows.values():
        assert keys <= set(row) and set(row["branches"]) == {"id", "text", "image"}
        assert 0 <= row["seed_overlap"] <= 1 and 0 <= row["one_vs_T_overlap"] <= 1
        assert 0 <= row["valid_score"] <= 1 and row["n_users"] > 0
    assert rows["old"]["eval_steps"] == 1 and rows["paper"]["eval_steps"] == 4
    # lambda 0.001 scales x_t by 0.001 in the denoiser's input: x0_hat barely moves when x_T is
    # zeroed; at lambda 1 it moves by a sizeable fraction.
    assert rows["old"]["zero"] < 0.01 < rows["paper"]["zero"]
    assert rows["old"]["noise_x10"] < 0.1 < rows["paper"]["noise_x10"]
    printed = script.table(list(rows.values()), k=5)
    assert printed.count("\n") == 3 and "top-5 overlap, 2 eval seeds" in printed
