"""Each RecBole 1.2.1 breakage listed in recbole_mm/compat.py, shown fixed.

Every test here fails without its fix (hyperopt's pin is exercised by
tests/test_end_to_end.py::test_recbole_hyper_tuning_drives_our_objective): the numpy, pandas, scipy and setuptools ones when the pin
is lifted, the torch one without compat.patch_checkpoint_loading, the lightgbm one with RecBole's
own get_model.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_config
from packaging.requirements import Requirement

from recbole_mm.config import Config
from recbole_mm.quick_start import load_data_and_model
from recbole_mm.utils import UnknownModelError, create_dataset, data_preparation, get_model

PINNED = ("numpy", "scipy", "pandas", "setuptools", "hyperopt")


def test_installed_versions_satisfy_the_pins():
    requirements = {
        Requirement(r).name: Requirement(r) for r in importlib.metadata.requires("recbole_mm")
    }
    for name in PINNED:
        installed = importlib.metadata.version(name)
        assert requirements[name].specifier.contains(installed), (name, installed)


def test_numpy_config_builds(tiny_root):
    # RecBole's Config.compatibility_settings reads np.float_, which numpy 2 removed.
    config = Config(model="BPR", dataset=TINY, config_dict=tiny_config(tiny_root))
    assert config["model"] == "BPR"
    assert np.float_ is np.float64


def test_pandas_empty_sequence_cells_and_nan_are_filled(tmp_path):
    # With pandas 3's copy-on-write, RecBole's inplace fillna is a no-op: the empty token_seq
    # cell crashes the loader and the NaN float survives.
    folder = tmp_path / "seqcells"
    folder.mkdir()
    (folder / "seqcells.inter").write_text(
        "user_id:token\titem_id:token\n"
        + "".join(f"u{u}\ti{i}\n" for u in range(4) for i in range(3))
    )
    (folder / "seqcells.item").write_text(
        "item_id:token\tgenre:token_seq\tprice:float\ni0\ta b\t1.0\ni1\t\t\ni2\tb\t3.0\n"
    )
    config = Config(
        model="BPR",
        dataset="seqcells",
        config_dict={
            "data_path": str(tmp_path),
            "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "genre", "price"]},
            "normalize_all": False,
            "use_gpu": False,
            "state": "ERROR",
        },
    )
    dataset = create_dataset(config)
    i1 = dataset.token2id("item_id", "i1")
    assert dataset.item_feat["genre"][i1].sum() == 0  # empty sequence, padding only
    assert dataset.item_feat["price"][i1].item() == pytest.approx(2.0)  # mean of 1 and 3


def test_scipy_lightgcn_builds_its_graph(tiny_root):
    config = Config(model="LightGCN", dataset=TINY, config_dict=tiny_config(tiny_root))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train._dataset)
    assert model.norm_adj_matrix.shape == (model.n_users + model.n_items,) * 2


def test_setuptools_recbole_quick_start_imports():
    # ray 2.6.3 imports pkg_resources, which setuptools 81 and later no longer ship.
    done = subprocess.run(
        [sys.executable, "-c", "import recbole.quick_start"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_torch_saved_run_reloads_best_checkpoint(tiny_root, run_in_tmp):
    # RecBole's own trainer (run_recbole) pickles the Config; run_recbole_mm's trainers do not
    # (tests/test_recommend.py loads theirs with weights_only=True).
    import recbole.quick_start as rq

    saved = run_in_tmp / "saved"
    config_dict = tiny_config(tiny_root, epochs=2, checkpoint_dir=str(saved))
    result = rq.run_recbole(model="VBPR", dataset=TINY, config_dict=config_dict, saved=True)
    (checkpoint,) = saved.glob("VBPR-*.pth")
    config, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    assert config["model"] == "VBPR"
    from recbole.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], "VBPR")(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]
    # The fix is scoped: torch's safe default still refuses the pickled Config elsewhere.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint)


def test_unknown_model_is_reported_without_lightgbm():
    with pytest.raises(UnknownModelError) as err:
        get_model("NoSuchModel")
    message = str(err.value)
    assert "lightgbm" not in message
    assert "VBPR" in message and "LightGCN" in message and "SASRec" in message


def test_recbole_sequential_models_leave_anomaly_detection_off():
    # recbole/model/sequential_recommender/sine.py turns it on at import, for the whole process.
    code = (
        "import torch, recbole_mm\n"
        "from recbole_mm.utils import get_model\n"
        "get_model('SASRec'); get_model('SINE')\n"
        "print(torch.is_anomaly_enabled())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_ray_reads_a_local_results_folder_without_pyarrow(tmp_path):
    # ray 2.6.3's ExperimentAnalysis (end of every tune.run) asks pyarrow about local folders.
    pytest.importorskip("ray.tune")
    from ray.tune.analysis import experiment_analysis

    from recbole_mm.compat import patch_ray_local_experiment_analysis

    patch_ray_local_experiment_analysis()
    assert experiment_analysis.is_directory(str(tmp_path)) is True
    (tmp_path / "state.json").write_text("{}")
    assert experiment_analysis.is_directory(str(tmp_path / "state.json")) is False
