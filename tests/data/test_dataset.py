"""The multimodal datasets: alignment to RecBole ids, missing-feature policies, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, tiny_config, write_tiny_dataset

from recbole_mm.config import Config
from recbole_mm.data.dataset import (
    DatasetFilesMissing,
    MultimodalDataset,
    MultimodalSequentialDataset,
)
from recbole_mm.data.features import FeatureError
from recbole_mm.utils import create_dataset, data_preparation


def _dataset(root, cls=MultimodalDataset, model="VBPR", name=TINY, **overrides):
    config = Config(model=model, dataset=name, config_dict=tiny_config(root, **overrides))
    return cls(config)


@pytest.fixture
def fresh(tmp_path):
    facts = write_tiny_dataset(tmp_path / TINY)
    return tmp_path, facts


@pytest.mark.parametrize("cls", [MultimodalDataset, MultimodalSequentialDataset])
def test_rows_follow_recbole_item_ids(fresh, cls):
    root, facts = fresh
    model = "VBPR" if cls is MultimodalDataset else "SASRec"
    ds = _dataset(root, cls, model=model)
    assert ds.modalities == ("text", "image")
    id2token = ds.field2id_token["item_id"]
    text, image = ds.modality_features("text"), ds.modality_features("image")
    assert text.dtype == image.dtype == np.float32 or str(text.dtype) == "torch.float32"
    assert text.shape == (len(id2token), 8) and image.shape == (len(id2token), 6)
    assert not text[0].any() and not image[0].any()  # padding row
    for item_id in range(1, len(id2token)):
        token = id2token[item_id]
        np.testing.assert_array_equal(text[item_id].numpy(), facts["text"][token])
        if token in facts["image"]:
            np.testing.assert_array_equal(image[item_id].numpy(), facts["image"][token])


def test_mean_and_zero_fill(fresh):
    root, facts = fresh
    expected_mean = np.mean(list(facts["image"].values()), axis=0)
    for policy, expected in (("mean", expected_mean), ("zero", np.zeros(6))):
        ds = _dataset(root, missing_feature_policy=policy)
        for token in facts["missing_image"]:
            item_id = ds.token2id("item_id", token)
            np.testing.assert_allclose(
                ds.modality_features("image")[item_id].numpy(), expected, rtol=1e-5
            )


def test_drop_removes_items_and_their_interactions(fresh):
    root, facts = fresh
    ds = _dataset(root, missing_feature_policy="drop")
    assert not set(facts["missing_image"]) & set(ds.field2id_token["item_id"][1:])
    kept_inter = ds.inter_num
    full = _dataset(root)
    assert kept_inter < full.inter_num


def test_drop_keeps_benchmark_split_boundaries(tmp_path):
    facts = write_tiny_dataset(tmp_path / TINY, benchmark=True)
    config = tiny_config(
        tmp_path, benchmark_filename=["train", "valid", "test"], missing_feature_policy="drop"
    )
    ds = create_dataset(Config(model="VBPR", dataset=TINY, config_dict=config))
    train, valid, test = ds.build()
    dropped = set(facts["missing_image"])
    for part in (train, valid, test):
        tokens = set(ds.id2token("item_id", part.inter_feat["item_id"].numpy()))
        assert not tokens & dropped
    # Each split keeps exactly the rows of its own file that survive the drop.
    for part, name in ((train, "train"), (valid, "valid"), (test, "test")):
        lines = (tmp_path / TINY / f"{TINY}.{name}.inter").read_text().splitlines()[1:]
        assert len(part) == sum(line.split("\t")[1] not in dropped for line in lines)


def test_unknown_modality_names_dataset_and_available(fresh):
    root, _ = fresh
    ds = _dataset(root)
    with pytest.raises(
        FeatureError, match=r"asks for modality 'audio' .* declares \['text', 'image'\]"
    ):
        ds.modality_features("audio")


def test_dimension_mismatch_and_misaligned_files(fresh):
    root, _ = fresh
    with pytest.raises(FeatureError, match="modalities.text.dim = 9"):
        _dataset(root, modalities={"text": {"dim": 9}})
    (root / TINY / f"{TINY}.image.tokens").write_text("i1\n")
    with pytest.raises(FeatureError, match="misaligned"):
        _dataset(root)


def test_two_modalities_cannot_play_one_role(fresh):
    root, _ = fresh
    both = {"text": {"dim": 8, "role": "visual"}, "image": {"dim": 6, "role": "visual"}}
    with pytest.raises(FeatureError, match="text and modalities.image .* both play the role"):
        _dataset(root, modalities=both)
    tagged = _dataset(root, modalities={"text": {"dim": 8}, "image": {"dim": 6, "role": "visual"}})
    assert tagged.modalities == ("text", "image")


def test_nan_features_refused(fresh):
    root, _ = fresh
    feats = np.load(root / TINY / f"{TINY}.text.npy")
    feats[2, 1] = np.nan
    np.save(root / TINY / f"{TINY}.text.npy", feats)
    with pytest.raises(FeatureError, match="NaN or infinite"):
        _dataset(root)


def test_missing_files_print_build_command(tmp_path):
    config = Config(
        model="VBPR",
        dataset="absent-set",
        config_dict=tiny_config(tmp_path, build_command="python -m dataset_tools.amazon --x"),
    )
    with pytest.raises(
        DatasetFilesMissing, match=r"(?s)absent-set\.inter.*python -m dataset_tools\.amazon --x"
    ):
        create_dataset(config)
    bare = Config(model="BPR", dataset="absent-set", config_dict=tiny_config(tmp_path))
    with pytest.raises(DatasetFilesMissing, match="ml-100k-mm"):
        create_dataset(bare)


def test_baselines_get_recbole_datasets(fresh):
    root, _ = fresh
    ds = create_dataset(Config(model="BPR", dataset=TINY, config_dict=tiny_config(root)))
    assert type(ds).__name__ == "Dataset"
    assert (
        type(create_dataset(Config(model="VBPR", dataset=TINY, config_dict=tiny_config(root))))
        is MultimodalDataset
    )


def test_empty_split_and_empty_dataset_errors(fresh):
    root, _ = fresh
    config = Config(
        model="BPR",
        dataset=TINY,
        config_dict=tiny_config(
            root,
            eval_args={
                "split": {"RS": [1.0, 0.0, 0.0]},
                "order": "RO",
                "group_by": "user",
                "mode": "full",
            },
        ),
    )
    with pytest.raises(ValueError, match="split of dataset 'tiny-mm' is empty"):
        data_preparation(config, create_dataset(config))
    strict = Config(
        model="BPR",
        dataset=TINY,
        config_dict=tiny_config(root, user_inter_num_interval="[1000,inf)"),
    )
    with pytest.raises(ValueError, match="empty after filtering"):
        create_dataset(strict)


def test_recbole_create_dataset_never_tries_a_download(tmp_path):
    from recbole.data import create_dataset as recbole_create_dataset

    config = Config(
        model="VBPR",
        dataset="absent-set",
        config_dict=tiny_config(tmp_path, build_command="python -m dataset_tools.mmrec --y"),
    )
    with pytest.raises(DatasetFilesMissing, match="python -m dataset_tools.mmrec --y"):
        recbole_create_dataset(config)
