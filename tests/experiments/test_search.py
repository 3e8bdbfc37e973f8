"""The search driver's opening and closing, shared by the hyperopt and Ray backends."""

from __future__ import annotations

import json

import pytest

from recbole_mm.experiments.search import SearchPlan, Trial, plan_search


def test_an_unknown_algorithm_is_refused_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError, match="algo='grid' is not one of exhaustive, random, bayes"):
        plan_search("BPR", "toy", backend="hyperopt", algo="grid", output_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_finish_selects_on_validation_and_writes_the_results(tmp_path):
    config = {"valid_metric": "mrr@5", "valid_metric_bigger": False}
    plan = SearchPlan("BPR", "toy", "random", {}, {}, config, tmp_path)
    trials = [
        Trial({"lr": 1}, 0.3, test={"mrr@5": 0.1}),
        Trial({"lr": 2}, 0.2, test={"mrr@5": 0.9}),
        Trial({"lr": 3}, error="OOM"),
    ]
    result = plan.finish("ray", trials, 3.5)
    assert (result.backend, result.bigger, result.output_dir) == ("ray", False, tmp_path)
    assert result.best.params == {"lr": 2}  # lower validation is better here; test is not read
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["best_trial"] == 1 and summary["wall_seconds"] == 3.5
