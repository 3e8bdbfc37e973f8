"""The results writer shared by the benchmark and the search (no RecBole run)."""

from __future__ import annotations

import json

from recbole_mm.experiments.results import pipe_table, write_json, write_search_results
from recbole_mm.hyper import SearchResult, Trial


def test_pipe_table():
    assert pipe_table(["a", "b"], [[1, None], ["x", 0.5]]) == (
        "| a | b |\n|---|---|\n| 1 | None |\n| x | 0.5 |"
    )


def test_write_json_leaves_no_partial_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": tmp_path}, default=str)  # replaced whole, extra dumps arguments pass
    assert json.loads(path.read_text()) == {"a": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_search_table_marks_the_best_trial_and_keeps_test_beside_it(tmp_path):
    trials = [
        Trial({"lr": 1}, 0.1, valid={"ndcg@5": 0.1}, test={"ndcg@5": 0.9}, seconds=1.234),
        Trial({"lr": 2, "reg": 3}, 0.2, valid={"ndcg@5": 0.2}, test={"ndcg@5": 0.1}),
    ]
    paths = write_search_results(
        SearchResult("BPR", "toy", "hyperopt", "random", "ndcg@5", True, trials, 2.0), tmp_path
    )
    lines = paths["md"].read_text().splitlines()
    assert lines[0].startswith("# BPR on toy: hyperopt random search, 2 trials")
    assert "| trial | best | lr | reg | valid ndcg@5 | test ndcg@5 | seconds |" in "\n".join(lines)
    assert "| 0 |  | 1 |  | 0.1 | 0.9 | 1.23 |" in lines[-2] and lines[-1].startswith(
        "| 1 | * | 2 | 3 |"
    )
    assert paths["csv"].read_text().splitlines()[2].startswith("1,*,2,3,0.2,0.1")
    summary = json.loads(paths["json"].read_text())
    assert summary["best_trial"] == 1 and summary["best_params"] == {"lr": 2, "reg": 3}
