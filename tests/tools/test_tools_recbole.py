"""Converted datasets load in RecBole itself with the shipped YAMLs, with the expected splits."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from tools_fixtures import CORE_ITEMS, REPO, expected_core, write_amazon_raw, write_mmrec_folder

from dataset_tools.amazon import convert_amazon
from dataset_tools.common import mmrec_split_sizes
from dataset_tools.mmrec import import_mmrec
from recbole_mm.data.features import ModalitySpec, load_modality

DATASETS = REPO / "properties" / "dataset"


@pytest.fixture(scope="module")
def raw_2014(tmp_path_factory):
    return write_amazon_raw(tmp_path_factory.mktemp("raw2014"), release="2014", category="Baby")


def recbole_datasets(model: str, name: str, data_path, **extra):
    """RecBole's own Config and create_dataset, with the shipped YAML as the config file."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config = Config(
        model=model,
        dataset=name,
        config_file_list=[str(DATASETS / f"{name}.yaml")],
        config_dict={
            "data_path": str(data_path),
            "use_gpu": False,
            "state": "ERROR",
            "show_progress": False,
            "checkpoint_dir": str(data_path / "saved"),
            **extra,
        },
    )
    # The samplers and loaders accept the data (e.g. no user holds every item) ...
    data_preparation(config, create_dataset(config))
    # ... and the split, which data_preparation consumes, is inspected on a fresh copy.
    dataset = create_dataset(config)
    return dataset, dataset.build()


def declared_modalities_load(folder, name):
    declared = yaml.safe_load((DATASETS / f"{name}.yaml").read_text())["modalities"]
    for modality, entry in declared.items():
        spec = ModalitySpec.from_config(modality, entry, folder=folder, dataset=name)
        tokens, features = load_modality(spec)  # checks the declared dim
        assert np.isfinite(features).all() and len(tokens) > 0


@pytest.mark.slow
def test_mmrec_split_loads_with_bpr_and_the_baby_yaml(raw_2014, tmp_path):
    convert_amazon(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        image_features=raw_2014["image_features"],
        out=tmp_path,
        name="amazon-baby",
        split="mmrec",
        show_progress=False,
    )
    dataset, (train, valid, test) = recbole_datasets(
        "BPR",
        "amazon-baby",
        tmp_path,
        load_col={
            "inter": ["user_id", "item_id", "rating", "timestamp"],
            "item": ["item_id", "title"],
        },
    )
    core = expected_core()
    sizes = np.array([mmrec_split_sizes(len(items)) for items in core.values()]).sum(axis=0)
    assert (len(train), len(valid), len(test)) == tuple(sizes)
    assert dataset.user_num - 1 == len(core)
    assert dataset.item_num - 1 == len(CORE_ITEMS)
    assert dataset.item_feat is not None and "title" in dataset.item_feat
    declared_modalities_load(tmp_path / "amazon-baby", "amazon-baby")


@pytest.mark.slow
def test_loo_file_loads_with_sasrec_and_the_beauty_yaml(raw_2014, tmp_path):
    convert_amazon(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        image_features=raw_2014["image_features"],
        out=tmp_path,
        name="amazon-beauty",
        split="loo",
        show_progress=False,
    )
    # RecBole 1.2.1's own Config rejects SASRec's CE loss with its default negative sampling.
    dataset, (train, valid, test) = recbole_datasets(
        "SASRec", "amazon-beauty", tmp_path, train_neg_sample_args=None
    )
    core = expected_core()
    # Every prefix of a user's sequence is a sample: n-1 per user; the last two go to test and
    # valid, the remaining n-3 to train.
    assert len(valid) == len(test) == len(core)
    assert len(train) == sum(len(items) - 3 for items in core.values())
    assert dataset.item_num - 1 == len(CORE_ITEMS)
    declared_modalities_load(tmp_path / "amazon-beauty", "amazon-beauty")


@pytest.mark.slow
def test_imported_mmrec_split_loads_unchanged(tmp_path):
    facts = write_mmrec_folder(tmp_path / "baby")
    import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="amazon-baby")
    _, (train, valid, test) = recbole_datasets("BPR", "amazon-baby", tmp_path / "out")
    labels = np.array(facts["labels"])
    assert (len(train), len(valid), len(test)) == tuple(np.bincount(labels, minlength=3))
