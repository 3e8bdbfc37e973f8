"""The MMGCN/MMGRec-layout importer: the dictionary and features survive exactly, the split is
MMGRec's 8:1:1 and seeded, bad folders fail with clear messages, and the shipped YAMLs load it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from tools_fixtures import REPO

from dataset_tools.common import ConversionError
from dataset_tools.mmgcn import import_mmgcn, split_sizes
from recbole_mm.data.features import ModalitySpec, load_modality

N_USERS, N_ITEMS, DIM = 12, 20, 128


def write_mmgcn_folder(folder, *, offset=True, layout="tiktok", seed=0):
    """A tiny dataset as MMGCN ships it: items numbered from n_users, .pt or .npy features."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shift = N_USERS if offset else 0
    user_items = {
        u: {int(i) + shift for i in rng.choice(N_ITEMS, size=rng.integers(3, 12), replace=False)}
        for u in range(N_USERS)
    }
    user_items[0] |= {N_ITEMS - 1 + shift}  # the largest item id is used
    np.save(folder / "user_item_dict.npy", user_items, allow_pickle=True)
    features = {m: rng.normal(size=(N_ITEMS, DIM)).astype(np.float32) for m in "vat"}
    for m, matrix in features.items():
        if layout == "tiktok":
            torch.save(torch.from_numpy(matrix), folder / f"feat_{m}.pt")
        else:
            name = {"v": "FeatureVideo_normal", "a": "FeatureAudio_avg_normal"}.get(
                m, "FeatureText_stl_normal"
            )
            np.save(folder / f"{name}.npy", matrix)
    return {"user_items": user_items, "features": features, "shift": shift}


def _read(folder, name, part):
    return pd.read_csv(folder / f"{name}.{part}.inter", sep="\t", dtype=str)


@pytest.mark.parametrize(("offset", "layout"), [(True, "tiktok"), (False, "movielens")])
def test_round_trip_split_and_features(tmp_path, offset, layout):
    facts = write_mmgcn_folder(tmp_path / "raw", offset=offset, layout=layout)
    report = import_mmgcn(mmgcn_dir=tmp_path / "raw", out=tmp_path / "out", name="tiktok")
    folder = tmp_path / "out" / "tiktok"
    assert report["item_offset"] == facts["shift"]
    parts = {p: _read(folder, "tiktok", p) for p in ("train", "valid", "test")}
    for user, items in facts["user_items"].items():
        got = [
            set(parts[p]["item_id:token"][parts[p]["user_id:token"] == str(user)]) for p in parts
        ]
        expected = {str(i - facts["shift"]) for i in items}
        assert set.union(*got) == expected and sum(map(len, got)) == len(expected)
        assert tuple(map(len, got)) == split_sizes(len(items))
    assert report["split_sizes"]["train"] == len(parts["train"])
    for modality, key in (("visual", "v"), ("acoustic", "a"), ("textual", "t")):
        tokens, matrix = load_modality(
            ModalitySpec.from_config(modality, None, folder=folder, dataset="tiktok")
        )
        assert tokens == [str(i) for i in range(N_ITEMS)]
        np.testing.assert_array_equal(matrix, facts["features"][key])
    assert not (folder / "tiktok.inter").exists()


def test_split_rule_and_seed(tmp_path):
    assert [split_sizes(n) for n in (1, 3, 5, 10, 11, 20)] == [
        (1, 0, 0),
        (2, 0, 1),
        (4, 0, 1),
        (8, 1, 1),
        (9, 1, 1),
        (16, 2, 2),
    ]
    write_mmgcn_folder(tmp_path / "raw")
    tests = []
    for seed, out in ((1, "a"), (1, "b"), (2, "c")):
        import_mmgcn(mmgcn_dir=tmp_path / "raw", out=tmp_path / out, name="d", seed=seed)
        tests.append(_read(tmp_path / out / "d", "d", "test").to_numpy().tolist())
    assert tests[0] == tests[1] and tests[0] != tests[2]


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConversionError, match="does not exist.*--mmgcn-dir"):
        import_mmgcn(mmgcn_dir=tmp_path / "nope", out=tmp_path / "out", name="d")
    write_mmgcn_folder(tmp_path / "raw")
    np.save(tmp_path / "raw" / "short.npy", np.zeros((5, 4), np.float32))
    with pytest.raises(ConversionError, match=r"short\.npy has 5 rows.*--item-offset"):
        import_mmgcn(
            mmgcn_dir=tmp_path / "raw",
            out=tmp_path / "out",
            name="d",
            features={"textual": "short.npy"},
        )
    with pytest.raises(ConversionError, match="--item-offset 100 exceeds"):
        import_mmgcn(mmgcn_dir=tmp_path / "raw", out=tmp_path / "out", name="d", item_offset=100)
    np.save(tmp_path / "raw" / "list.npy", np.arange(4))
    with pytest.raises(ConversionError, match=r"must hold a non-empty \{user id: items\} dict"):
        import_mmgcn(
            mmgcn_dir=tmp_path / "raw", out=tmp_path / "out", name="d", dict_file="list.npy"
        )
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "empty" / "user_item_dict.npy", {0: [1, 2]}, allow_pickle=True)
    with pytest.raises(ConversionError, match="No known feature file"):
        import_mmgcn(mmgcn_dir=tmp_path / "empty", out=tmp_path / "out", name="d")


def test_cli_then_recbole_loads_it_with_the_shipped_yaml(tmp_path):
    write_mmgcn_folder(tmp_path / "raw")
    command = [sys.executable, "-m", "dataset_tools.mmgcn", "--mmgcn-dir", str(tmp_path / "raw")]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "data"), "--name", "tiktok"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "item offset 12" in done.stderr
    bad = subprocess.run(
        [*command, "--out", str(tmp_path / "data"), "--name", "t", "--item-offset", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "'auto' or an integer" in bad.stderr

    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation

    shipped = yaml.safe_load((REPO / "properties" / "dataset" / "tiktok.yaml").read_text())
    assert shipped["build_command"].split()[:3] == ["python", "-m", "dataset_tools.mmgcn"]
    config = Config(
        model="BPR",
        dataset="tiktok",
        config_dict={"data_path": str(tmp_path / "data"), "state": "ERROR", "epochs": 1},
    )
    train, valid, test = data_preparation(config, create_dataset(config))
    assert config["topk"] == [10] and config["valid_metric"] == "Recall@10"
    assert len(train._dataset) + len(valid._dataset) + len(test._dataset) == sum(
        len(_read(tmp_path / "data" / "tiktok", "tiktok", p)) for p in ("train", "valid", "test")
    )
