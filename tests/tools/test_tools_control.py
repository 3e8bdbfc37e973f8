"""dataset_tools.control: the control modalities (an SVD factor of the whole matrix + noise)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tools_fixtures import REPO

from dataset_tools.common import ConversionError
from dataset_tools.control import (
    add_control_modalities,
    item_factor,
    mix,
    modality_name,
    usage_yaml,
)
from recbole_mm.data.features import ModalitySpec, load_modality
from tests.conftest import TINY, tiny_config, write_tiny_dataset


def synthetic_pairs(seed: int, n_users: int = 400, n_items: int = 300) -> pd.DataFrame:
    """A binary matrix with low-rank structure (user and item groups), as token pairs."""
    rng = np.random.default_rng(seed)
    user_taste = rng.normal(size=(n_users, 4))
    item_kind = rng.normal(size=(n_items, 4))
    p = 1 / (1 + np.exp(-(user_taste @ item_kind.T) + 2.5))
    users, items = np.nonzero(rng.random((n_users, n_items)) < p)
    return pd.DataFrame({"user": [f"u{u}" for u in users], "item": [f"i{i}" for i in items]})


def column_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


def test_the_factor_is_standardised_and_the_mixture_has_the_chosen_correlation():
    items, z = item_factor(synthetic_pairs(0), dim=16)
    assert z.shape == (len(items), 16)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z.var(0), 1, atol=1e-9)
    noise = np.random.default_rng(1).standard_normal(z.shape)
    np.testing.assert_allclose(mix(z, noise, 1.0), z, atol=1e-6)
    for rho in (0.5, 0.1):
        corr = column_correlations(mix(z, noise, rho), z)
        # ~300 items per column: a sample correlation's standard error is below 0.06.
        assert abs(corr.mean() - np.sqrt(rho)) < 0.03, (rho, corr.mean())
        assert np.abs(corr - np.sqrt(rho)).max() < 0.2, (rho, corr)
    assert np.abs(column_correlations(mix(z, noise, 0.0), z).mean()) < 0.03


def test_the_factor_carries_the_matrix():
    """The rank-16 factor of a rank-4-structured matrix predicts which items co-occur."""
    pairs = synthetic_pairs(0)
    items, z = item_factor(pairs, dim=16)
    x = pd.crosstab(pairs["item"], pairs["user"]).reindex(items).to_numpy(float)
    cooc = np.corrcoef(x)[np.triu_indices(len(items), 1)]
    similar = np.corrcoef(z)[np.triu_indices(len(items), 1)]
    assert np.corrcoef(cooc, similar)[0, 1] > 0.5


def test_rho_zero_does_not_depend_on_the_data(tmp_path):
    for seed in (0, 1):
        write_tiny_dataset(tmp_path / f"d{seed}" / TINY, seed=seed)
    out = []
    for seed in (0, 1):
        report = add_control_modalities(TINY, [0], data_path=tmp_path / f"d{seed}", dim=8, seed=7)
        folder = tmp_path / f"d{seed}" / TINY
        tokens, features = load_modality(
            ModalitySpec.from_config("control_r0", {"dim": 8}, folder=folder, dataset=TINY)
        )
        out.append(dict(zip(tokens, features)))
        assert report["modalities"] == {"control_r0": 0.0}
    # Two different matrices, one seed: the negative control is the same noise, row for row.
    rows = sorted(set(out[0]) & set(out[1]))
    first = np.stack([out[0][t] for t in sorted(out[0])])
    second = np.stack([out[1][t] for t in sorted(out[1])])
    assert len(first) == len(second) and len(rows) > 20
    np.testing.assert_array_equal(first, second)


def test_pre_split_files_are_all_read_and_listed_items_without_interactions_get_zero(tmp_path):
    facts = write_tiny_dataset(tmp_path / TINY, benchmark=True)
    (tmp_path / TINY / f"{TINY}.item").write_text("item_id:token\ti1\nlonely\n")
    report = add_control_modalities(TINY, [1, 0.5], data_path=tmp_path, dim=8)
    assert len(report["read"]) == 3 and report["pairs"] == facts["n_inter"]
    assert report["items_without_interactions"] == 1
    folder = tmp_path / TINY
    tokens, features = load_modality(
        ModalitySpec.from_config("control_r100", {"dim": 8}, folder=folder, dataset=TINY)
    )
    assert tokens[-1] == "lonely"
    np.testing.assert_array_equal(features[-1], 0)  # rho = 1: z itself, zero for the lonely item
    assert (folder / f"{TINY}.control_r50.npy").is_file()
    assert "validation and test" in (folder / f"{TINY}.control.json").read_text()


def test_the_control_loads_through_recbole_and_vbpr_trains_on_it_alone(tmp_path, run_in_tmp):
    from recbole_mm.quick_start import run_recbole_mm

    write_tiny_dataset(tmp_path / "data" / TINY)
    add_control_modalities(TINY, [0.5], data_path=tmp_path / "data", dim=8)
    config = tiny_config(
        tmp_path / "data",
        modalities={"control_r50": {"dim": 8}},
        modality_roles={"control_r50": "control_r50"},
    )
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset

    dataset = create_dataset(Config(model="VBPR", dataset=TINY, config_dict=config))
    assert dataset.modalities == ("control_r50",)
    tokens, features = load_modality(
        ModalitySpec.from_config(
            "control_r50", {"dim": 8}, folder=tmp_path / "data" / TINY, dataset=TINY
        )
    )
    row = dict(zip(tokens, features))
    item = dataset.field2id_token["item_id"][5]
    np.testing.assert_array_equal(dataset.modality_features("control_r50")[5].numpy(), row[item])
    result = run_recbole_mm(model="VBPR", dataset=TINY, config_dict=config, saved=False)
    assert np.isfinite(result["test_result"]["ndcg@5"])


@pytest.mark.parametrize("rho", [1.5, -0.1, float("nan")])
def test_rho_outside_the_unit_interval_is_refused(tmp_path, rho):
    write_tiny_dataset(tmp_path / TINY)
    with pytest.raises(ConversionError, match="outside \\[0, 1\\]"):
        add_control_modalities(TINY, [0.5, rho], data_path=tmp_path, dim=8)
    assert not (tmp_path / TINY / f"{TINY}.control_r50.npy").exists()  # nothing half-written


def test_unknown_folder_and_too_large_dim_are_refused(tmp_path):
    with pytest.raises(ConversionError, match="does not exist. Pass --data_path"):
        add_control_modalities("nowhere", [0.5], data_path=tmp_path)
    write_tiny_dataset(tmp_path / TINY)
    with pytest.raises(ConversionError, match="--dim 64 is not below"):
        add_control_modalities(TINY, [0.5], data_path=tmp_path)


def test_names():
    assert [modality_name(r) for r in (1, 0.5, 0.1, 0, 0.025)] == [
        "control_r100",
        "control_r50",
        "control_r10",
        "control_r0",
        "control_r2p5",
    ]
    yaml_text = usage_yaml({"dim": 64, "modalities": {"control_r50": 0.5, "control_r0": 0.0}})
    assert "  control_r50: {dim: 64}" in yaml_text and "  control_r0: {dim: 64}" in yaml_text
    assert "modality_roles: {control_r50: control_r50}" in yaml_text
    assert "never a benchmark" in yaml_text


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "dataset_tools.control", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli(tmp_path):
    write_tiny_dataset(tmp_path / TINY)
    result = run("--dataset", TINY, "--data_path", str(tmp_path), "--rho", "1", "0", "--dim", "8")
    assert result.returncode == 0, result.stderr
    assert "control_r100: {dim: 8}" in result.stdout and "never a benchmark" in result.stdout
    assert f"wrote {tmp_path / TINY / (TINY + '.control_r0.npy')}" in result.stderr
    bad = run("--dataset", TINY, "--data_path", str(tmp_path), "--rho", "2", "--dim", "8")
    assert bad.returncode == 2 and "--rho 2 is outside [0, 1]" in bad.stderr
    missing = run("--dataset", "nowhere", "--data_path", str(tmp_path), "--rho", "0.5")
    assert missing.returncode == 2 and "nowhere does not exist" in missing.stderr
