"""Each RecBole 1.2.1 breakage listed in recbole_mm/compat.py, shown fixed.

Every test here fails without its fix (hyperopt's pin is exercised by
tests/test_end_to_end.py::test_recbole_hyper_tuning_drives_our_objective): the pandas and
setuptools ones when the pin is lifted; the numpy and scipy ones without
compat.restore_numpy_aliases and compat.restore_dok_update (the simulated removals on every
release, the real runs on numpy >= 2 and scipy >= 1.13); the ray ones without
compat.import_recbole_quick_start; the torch one without compat.patch_checkpoint_loading; the
lightgbm one with RecBole's own get_model."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import TINY, tiny_code_generator, tiny_config
from packaging.requirements import Requirement

from recbole_mm import compat
from recbole_mm.config import Config
from recbole_mm.quick_start import load_data_and_model
from recbole_mm.utils import UnknownModelError, create_dataset, data_preparation, get_model

PINNED = ("pandas", "hyperopt", "setuptools")
# Pinned by the `ray` extra, for ray 2.6.3 (setup.cfg); checked where Ray is installed.
PINNED_WITH_RAY = ("ray", "numpy")


def _requirements(extra: str = "") -> dict[str, Requirement]:
    """recbole_mm's requirements on this Python: the base ones, or those ``extra`` adds."""
    chosen = {}
    for requirement in map(Requirement, importlib.metadata.requires("recbole_mm")):
        marker = requirement.marker
        in_base = marker is None or marker.evaluate({"extra": ""})
        applies = marker is None or marker.evaluate({"extra": extra})
        if applies and in_base == (extra == ""):
            chosen[requirement.name] = requirement
    return chosen


def test_installed_versions_satisfy_the_pins():
    requirements = _requirements()
    for name in PINNED:
        installed = importlib.metadata.version(name)
        assert requirements[name].specifier.contains(installed), (name, installed)
    assert importlib.metadata.version("recbole") == "1.2.1"  # what compat.py was written for
    if importlib.util.find_spec("ray") is None:
        return
    with_ray = _requirements("ray")
    for name in PINNED_WITH_RAY:
        if name in with_ray:  # Python < 3.12
            installed = importlib.metadata.version(name)
            assert with_ray[name].specifier.contains(installed), (name, installed)


def test_numpy_config_builds(tiny_root):
    # RecBole's Config.compatibility_settings reads np.float_, which numpy 2 removed.
    config = Config(model="BPR", dataset=TINY, config_dict=tiny_config(tiny_root))
    assert config["model"] == "BPR"
    assert np.float_ is np.float64


def test_numpy_removed_aliases_come_back_as_they_were(monkeypatch):
    for alias in compat.NUMPY_REMOVED_ALIASES:
        monkeypatch.delattr(np, alias, raising=False)  # numpy 2 as seen from numpy 1 too
    compat.restore_numpy_aliases()
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    from recbole.config import Config as RecBoleConfig

    RecBoleConfig.compatibility_settings(None)  # reads them; self is unused
    assert np.float is np.float64


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
    # RecBole's LightGCN fills its adjacency with dok_matrix._update, gone in scipy 1.13.
    config = Config(model="LightGCN", dataset=TINY, config_dict=tiny_config(tiny_root))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train._dataset)
    n_users, n = model.n_users, model.n_users + model.n_items
    r = train._dataset.inter_matrix(form="csr").astype(np.float64)
    a = sp.bmat([[None, r], [r.T, None]], format="csr").toarray()
    d = (a.sum(axis=1) + 1e-7) ** -0.5
    expected = d[:, None] * a * d[None, :]  # D^-1/2 A D^-1/2, as LightGCN's paper and RecBole
    assert model.norm_adj_matrix.shape == (n, n) and a[:n_users, n_users:].sum() > 0
    got = model.norm_adj_matrix.to_dense().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_scipy_dok_update_matches_item_assignment():
    entries = {(0, 2): 1, (3, 1): 1, (2, 2): 5}
    matrix = sp.dok_matrix((4, 4), dtype=np.float32)
    compat.dok_update(matrix, entries)
    expected = np.zeros((4, 4), dtype=np.float32)
    for (i, j), v in entries.items():
        expected[i, j] = v
    np.testing.assert_array_equal(matrix.toarray(), expected)
    compat.dok_update(matrix, {})
    with pytest.raises(IndexError):
        compat.dok_update(matrix, {(4, 0): 1})
    patched = sp.dok_matrix((4, 4), dtype=np.float32)
    patched._update(entries)  # scipy's own below 1.13, compat's from 1.13
    np.testing.assert_array_equal(patched.toarray(), expected)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_setuptools_hyperopt_imports():
    # hyperopt 0.2.5 (RecBole's HyperTuning, our hyperopt backend) imports pkg_resources.
    done = _run("import hyperopt")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("module", "imports"),
    [
        # recbole.quick_start imports ray.tune at module level (about a second).
        ("ray", "import recbole_mm, recbole.quick_start"),
        # transformers (about 0.6 s) loads only when a model builds or runs a T5/GPT-2 backbone.
        (
            "transformers",
            "import recbole_mm; from recbole_mm.utils import recbole_mm_models; "
            "recbole_mm_models()",
        ),
    ],
)
def test_heavy_module_is_not_imported_with_recbole_mm(module, imports):
    done = _run(f"import sys\n{imports}\nprint({module!r} in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_ray_absent_recbole_quick_start_imports_and_reports_nowhere():
    # Python >= 3.12 has no ray wheel RecBole accepts; `sys.modules["ray"] = None` hides it here.
    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "import recbole_mm\n"
        "from recbole.quick_start import run_recbole, objective_function\n"
        "from recbole.quick_start.quick_start import tune\n"
        "print(tune.report(recall=0.5), sys.modules['ray'])\n"
        "try:\n"
        "    tune.run\n"
        "except AttributeError as err:\n"
        "    print(err)\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    report, error = done.stdout.strip().splitlines()
    assert report == "None None"  # nothing reported, and ray stays hidden
    assert "pip install 'recbole_mm[ray]'" in error


def test_ray_recbole_objective_function_runs(tiny_root, run_in_tmp):
    # RecBole's own objective_function ends with tune.report(**test_result).
    import recbole.quick_start as rq

    config = {**tiny_config(tiny_root), "model": "BPR", "dataset": TINY}
    result = rq.objective_function(config_dict=config, saved=False)
    assert result["model"] == "BPR" and set(result["test_result"]) == {"recall@5", "ndcg@5"}


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


@pytest.mark.parametrize("backbone", ["t5", "decoder"])
def test_transformers_cache_goes_by_the_installed_name(backbone):
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns, then goes);
    4.x knows only ``past_key_values``. The cached search step must hand the cache over under
    the name the installed release takes, and get it back from the output."""
    import warnings

    gen = tiny_code_generator(backbone, [4, 3], max_prompt_tokens=8)
    prompt = gen.tokens.tokens(torch.tensor([[1, 2], [3, 0]])).repeat(1, 2)  # [2, 4]
    mask = torch.ones_like(prompt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated keyword would raise here
        log_probs, state = gen.search_step(
            torch.zeros(2, 0, dtype=torch.long), gen.search_state(prompt, mask)
        )
        assert state[2] is not None  # the output's cache was found
        gen.search_step(torch.tensor([[1], [2]]), state)
    parameters = inspect.signature(type(gen.model).forward).parameters
    (name,) = compat.cache_argument(gen.model, state[2])
    assert name in parameters
    assert compat.cache_argument(gen.model, None) == {}
