"""Whole runs through the real entry points: ours and RecBole's, our model and RecBole's."""

from __future__ import annotations

import pytest
from conftest import TINY, tiny_config, write_tiny_dataset

from recbole_mm.cli import main
from recbole_mm.quick_start import load_data_and_model, objective_function, run_recbole_mm

BASELINES = ["BPR", "LightGCN", "SASRec", "GRU4Rec", "BERT4Rec"]


def _check_result(result):
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())


@pytest.mark.parametrize("model", BASELINES)
def test_recbole_baselines_on_multimodal_data_through_our_cli(model, tiny_root, run_in_tmp):
    overrides = [f"--{k}={v}" for k, v in tiny_config(tiny_root).items() if k != "modalities"]
    _check_result(main([f"--model={model}", f"--dataset={TINY}", "--saved=False", *overrides]))


def test_benchmark_files_split_is_reproduced_exactly(tmp_path, run_in_tmp):
    write_tiny_dataset(tmp_path / TINY, benchmark=True)
    config = tiny_config(tmp_path, benchmark_filename=["train", "valid", "test"])
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation

    cfg = Config(model="VBPR", dataset=TINY, config_dict=config)
    train, valid, test = data_preparation(cfg, create_dataset(cfg))
    n_test = len((tmp_path / TINY / f"{TINY}.test.inter").read_text().splitlines()) - 1
    assert len(test._dataset) == n_test
    assert len(valid._dataset) == n_test  # one valid and one test row per user in the fixture


def test_our_model_saves_reloads_and_tunes(tiny_root, run_in_tmp):
    config = tiny_config(tiny_root, epochs=2)
    result = run_recbole_mm(model="VBPR", dataset=TINY, config_dict=config, saved=True)
    _check_result(result)
    loaded_config, model, *_ = load_data_and_model(result["checkpoint"])
    assert type(model).__name__ == "VBPR" and loaded_config["epochs"] == 2

    trial = objective_function(
        config_dict={**config, "model": "VBPR", "dataset": TINY}, saved=False
    )
    assert trial["model"] == "VBPR" and "test_result" in trial


def test_recbole_entry_points_accept_our_models(tiny_root, run_in_tmp):
    import recbole.quick_start as rq
    from recbole.utils import get_model as recbole_get_model

    import recbole_mm  # noqa: F401  (registration happens at import)
    from recbole_mm.model.general_recommender import VBPR

    assert recbole_get_model("VBPR") is VBPR
    saved = run_in_tmp / "saved"
    config = tiny_config(tiny_root, checkpoint_dir=str(saved))
    result = rq.run_recbole(model="VBPR", dataset=TINY, config_dict=config)
    _check_result(result)
    (checkpoint,) = saved.glob("VBPR-*.pth")
    config, model, dataset, *_ = rq.load_data_and_model(str(checkpoint))
    assert type(model) is VBPR and dataset.modalities == ("text", "image")


def test_recbole_hyper_tuning_drives_our_objective(tiny_root, run_in_tmp, tmp_path):
    from recbole.trainer import HyperTuning

    params = tmp_path / "vbpr.hyper"
    params.write_text("reg_weight choice [0.1,0.001]\n")
    fixed = tmp_path / "fixed.yaml"
    import yaml

    fixed.write_text(yaml.safe_dump({**tiny_config(tiny_root), "model": "VBPR", "dataset": TINY}))
    tuner = HyperTuning(
        lambda config_dict, config_file_list: objective_function(
            config_dict, config_file_list, saved=False
        ),
        algo="exhaustive",
        early_stop=10,
        max_evals=2,
        params_file=str(params),
        fixed_config_file_list=[str(fixed)],
    )
    tuner.run()
    assert len(tuner.params2result) == 2
    assert tuner.best_params["reg_weight"] in (0.1, 0.001)
