"""Config: our property files inside RecBole's precedence, and the embedded data_path."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import TINY, tiny_config

from recbole_mm import properties
from recbole_mm.config import Config


def test_model_file_is_loaded_and_overridden_in_order(tmp_path, tiny_root, monkeypatch):
    shipped = yaml.safe_load(properties.model_file("VBPR").read_text())["reg_weight"]
    base = tiny_config(tiny_root)
    base.pop("embedding_size")
    assert Config(model="VBPR", dataset=TINY, config_dict=base)["reg_weight"] == shipped

    file = tmp_path / "extra.yaml"
    file.write_text("reg_weight: 0.5\nlearning_rate: 0.02\n")
    config = Config(model="VBPR", dataset=TINY, config_file_list=[str(file)], config_dict=base)
    assert config["reg_weight"] == 0.5  # file > internal

    config = Config(
        model="VBPR",
        dataset=TINY,
        config_file_list=[str(file)],
        config_dict={**base, "reg_weight": 0.25},
    )
    assert config["reg_weight"] == 0.25  # dict > file

    config = Config(
        model="VBPR",
        dataset=TINY,
        config_file_list=[str(file)],
        config_dict={**base, "reg_weight": 0.25},
        overrides={"reg_weight": 0.125},
    )
    assert config["reg_weight"] == 0.125  # command line > dict
    assert config["learning_rate"] == 0.02


def test_given_overrides_the_config_reads_nothing_from_sys_argv(tiny_root, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--reg_weight=0.5", "--epochs=abc"])
    config = Config(
        model="VBPR", dataset=TINY, config_dict=tiny_config(tiny_root), overrides={"seed": 7}
    )
    assert config.cmd_config_dict == {"seed": 7}
    assert config["seed"] == 7 and config["epochs"] == 1
    assert config["reg_weight"] != 0.5
    assert config._source_of("seed") == "on the command line"
    empty = Config(model="VBPR", dataset=TINY, config_dict=tiny_config(tiny_root), overrides={})
    assert empty.cmd_config_dict == {}


def test_without_overrides_sys_argv_is_read_as_before_with_a_warning(tiny_root, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--reg_weight=0.125"])
    with pytest.warns(FutureWarning, match=r"--reg_weight .*config\.parse_overrides"):
        config = Config(model="VBPR", dataset=TINY, config_dict=tiny_config(tiny_root))
    assert config["reg_weight"] == 0.125


def test_recbole_defaults_survive_for_baselines(tiny_root):
    config = Config(model="SASRec", dataset=TINY, config_dict=tiny_config(tiny_root))
    # RecBole's sequential quick-start protocol (leave-one-out by time) is kept.
    assert config["eval_args"]["order"] == "TO"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["missing_feature_policy"] == "mean"  # our overall.yaml


def test_embedded_dataset_lives_in_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RECBOLE_MM_CACHE", str(tmp_path))
    config = Config(model="BPR", dataset="ml-100k-mm", config_dict={"use_gpu": False})
    assert config["data_path"] == str(tmp_path / "datasets" / "ml-100k-mm")
    assert config["modalities"]["text"]["dim"] == 384
    config = Config(
        model="BPR",
        dataset="ml-100k-mm",
        config_dict={"use_gpu": False, "data_path": str(tmp_path / "mine")},
    )
    assert config["data_path"] == str(tmp_path / "mine" / "ml-100k-mm")


def test_shipped_numbers_are_numbers_to_plain_yaml():
    """Scripts and users read the property files with plain YAML, which takes ``1e-5`` (no dot)
    for a string; every number-like value must be written so that it reads as a number."""
    import re

    number = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    folder = properties.model_file("GTC").parent.parent
    offenders = []
    for path in sorted(folder.glob("*/*.yaml")):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(value, str) and number.match(value):
                offenders.append(f"{path.name}: {key} = {value!r}")
    assert not offenders, offenders
