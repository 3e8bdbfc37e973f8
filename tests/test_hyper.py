"""Hyper-parameter search: the .hyper parser, selection on validation, hyperopt and Ray runs."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm.config import parse_overrides
from recbole_mm.hyper import (
    SearchResult,
    Trial,
    hyperopt_search,
    main,
    ray_search,
    read_space,
    select_best,
    space_file,
    write_results,
)


def _fixed(root):
    return tiny_config(root, stopping_step=10)


def test_read_space_and_its_errors(tmp_path):
    good = tmp_path / "good.hyper"
    good.write_text(
        "# grid\nlearning_rate choice [0.01, 0.001]\nreg_weight loguniform -8,-2\n"
        "dropout uniform 0.0,0.5\nn_layers quniform 1,3,1\n"
    )
    assert read_space(good) == {
        "learning_rate": ("choice", [0.01, 0.001]),
        "reg_weight": ("loguniform", [-8.0, -2.0]),
        "dropout": ("uniform", [0.0, 0.5]),
        "n_layers": ("quniform", [1.0, 3.0, 1.0]),
    }
    for text, message in [
        ("learning_rate pick [1,2]\n", "type one of"),
        ("learning_rate choice []\n", "non-empty list"),
        ("dropout uniform 0.5\n", "2 comma-separated"),
        ("learning_rate choice [__import__('os')]\n", "unreadable"),
    ]:
        bad = tmp_path / "bad.hyper"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_space(bad)
    with pytest.raises(ValueError, match="params_file="):
        space_file("NoSuchModel")


def test_selection_reads_validation_only():
    trials = [
        Trial({"lr": 1}, best_valid_score=0.30, test={"ndcg@5": 0.90}),
        Trial({"lr": 2}, best_valid_score=0.40, test={"ndcg@5": 0.10}),
        Trial({"lr": 3}, best_valid_score=0.40, test={"ndcg@5": 0.95}),
        Trial({"lr": 4}, error="failed"),
    ]
    assert select_best(trials, bigger=True).params == {"lr": 2}  # first of the tied best
    assert select_best(trials, bigger=False).params == {"lr": 1}


def test_a_search_whose_trials_all_failed_still_writes_its_table(tmp_path):
    result = SearchResult(
        "BPR", TINY, "ray", "random", "ndcg@5", True, [Trial({}, error="OOM")], 1.0
    )
    with pytest.raises(RuntimeError, match="No trial finished"):
        select_best(result.trials, bigger=result.bigger)
    paths = write_results(result, tmp_path)
    assert json.loads(paths["json"].read_text())["best_trial"] is None
    assert "OOM" in paths["md"].read_text()


def test_overrides_are_literals():
    assert parse_overrides(["--epochs=3", "--learning_rate=1e-3", "--learner=adam"]) == {
        "epochs": 3,
        "learning_rate": 0.001,
        "learner": "adam",
    }
    assert parse_overrides(["--topk=[5,10]", "--use_gpu=false"]) == {
        "topk": [5, 10],
        "use_gpu": False,
    }


def _check(result, n_trials):
    assert len(result.trials) == n_trials
    scores = [t.best_valid_score for t in result.trials]
    best = result.best
    assert best.best_valid_score == max(scores)
    assert best.valid["ndcg@5"] == best.best_valid_score  # valid_metric NDCG@5 drove it
    assert set(best.test) == {"recall@5", "ndcg@5"}
    summary = json.loads((result.output_dir / "results.json").read_text())
    assert summary["best_params"] == best.params
    assert "| * |" in (result.output_dir / "results.md").read_text()
    # The trial's best-validation checkpoint is kept, and loads without unpickling objects.
    assert torch.load(best.checkpoint, weights_only=True)["config"]["model"] == result.model


def test_exhaustive_search_from_the_command_line(tiny_root, run_in_tmp, tmp_path, monkeypatch):
    grid = tmp_path / "grid.hyper"
    grid.write_text("reg_weight choice [0.1,0.0001]\nlearning_rate choice [0.05,0.001]\n")
    overrides = [f"--{k}={v}" for k, v in _fixed(tiny_root).items()]
    # The process's own command line is neither rewritten nor read by a trial's Config.
    stray = ["run_hyper.py", "--epochs=abc"]
    monkeypatch.setattr(sys, "argv", list(stray))
    result = main(
        ["--model=VBPR", f"--dataset={TINY}", f"--params_file={grid}", "--output_dir=out"]
        + overrides
    )
    assert sys.argv == stray
    _check(result, 4)
    assert sorted((t.params["reg_weight"], t.params["learning_rate"]) for t in result.trials) == [
        (0.0001, 0.001),
        (0.0001, 0.05),
        (0.1, 0.001),
        (0.1, 0.05),
    ]


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_hyperopt_random_and_bayes(algo, tiny_root, run_in_tmp, tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate loguniform -7,-2\n")
    result = hyperopt_search(
        "BPR",
        TINY,
        params_file=str(space),
        algo=algo,
        max_evals=2,
        config_dict=_fixed(tiny_root),
        output_dir="out",
    )
    _check(result, 2)
    assert all(0.0009 < t.params["learning_rate"] < 0.14 for t in result.trials)


def test_bad_searches_are_refused(tiny_root, run_in_tmp, tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate uniform 0.001,0.01\n")
    with pytest.raises(ValueError, match="exhaustive needs 'choice'"):
        hyperopt_search("BPR", TINY, params_file=str(space), config_dict=_fixed(tiny_root))
    with pytest.raises(ValueError, match="both fixed"):
        hyperopt_search(
            "BPR",
            TINY,
            params_file=str(space),
            algo="random",
            config_dict={**_fixed(tiny_root), "learning_rate": 0.1},
        )


def test_ray_search_without_ray_says_how_to_install_it(tiny_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as on Python >= 3.12
    with pytest.raises(ModuleNotFoundError, match=r"recbole_mm\[ray\]"):
        ray_search("VBPR", TINY, config_dict=_fixed(tiny_root))


def test_ray_search_runs_two_trials_in_parallel(tiny_root, run_in_tmp, tmp_path):
    pytest.importorskip("ray.tune")
    grid = tmp_path / "grid.hyper"
    grid.write_text("learning_rate choice [0.05,0.001]\n")
    result = ray_search(
        "VBPR",
        TINY,
        params_file=str(grid),
        algo="exhaustive",
        config_dict=_fixed(tiny_root),
        output_dir="out",
        num_cpus=2,
        cpus_per_trial=1,
    )
    import ray

    assert not ray.is_initialized()  # the local instance it started is shut down
    _check(result, 2)
    assert sorted(t.params["learning_rate"] for t in result.trials) == [0.001, 0.05]
