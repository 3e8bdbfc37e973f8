"""Feature files: format, validation messages, alignment to item ids (no RecBole needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_mm.data.features import (
    FeatureError,
    ModalitySpec,
    align_features,
    check_feature_matrix,
    load_modality,
    read_feature_matrix,
    save_modality,
)


def _spec(folder, name="d", modality="text", dim=None):
    return ModalitySpec.from_config(modality, {"dim": dim}, folder=folder, dataset=name)


def test_save_load_round_trip(tmp_path):
    feats = np.arange(12, dtype=np.float64).reshape(4, 3)
    save_modality(tmp_path, "d", "text", tokens=["a", "b", "c", "d"], features=feats)
    tokens, loaded = load_modality(_spec(tmp_path, dim=3))
    assert tokens == ["a", "b", "c", "d"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, feats.astype(np.float32))


def test_misaligned_rows_name_both_files(tmp_path):
    save_modality(tmp_path, "d", "text", tokens=["a", "b"], features=np.zeros((2, 3)))
    (tmp_path / "d.text.tokens").write_text("a\nb\nc\n")
    with pytest.raises(FeatureError, match=r"has 2 rows but .*d\.text\.tokens names 3 items"):
        load_modality(_spec(tmp_path))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(tmp_path, bad):
    feats = np.zeros((3, 2))
    feats[1, 0] = bad
    with pytest.raises(FeatureError, match=r"NaN or infinite values in 1 rows \(items \['b'\]\)"):
        save_modality(tmp_path, "d", "text", tokens=["a", "b", "c"], features=feats)
    np.save(tmp_path / "d.text.npy", feats)
    (tmp_path / "d.text.tokens").write_text("a\nb\nc\n")
    with pytest.raises(FeatureError, match="d.text.npy"):
        load_modality(_spec(tmp_path))


def test_declared_dimension_must_match(tmp_path):
    save_modality(tmp_path, "d", "image", tokens=["a"], features=np.zeros((1, 5)))
    with pytest.raises(FeatureError, match=r"dimension 5 .* modalities\.image\.dim = 4"):
        load_modality(_spec(tmp_path, modality="image", dim=4))


def test_missing_file_names_path_and_fix(tmp_path):
    with pytest.raises(FeatureError, match=r"d\.text\.npy does not exist.*feature_file"):
        load_modality(_spec(tmp_path))


def test_duplicate_tokens_and_wrong_rank(tmp_path):
    with pytest.raises(FeatureError, match="repeats item tokens"):
        save_modality(tmp_path, "d", "text", tokens=["a", "a"], features=np.zeros((2, 2)))
    with pytest.raises(FeatureError, match="2-D"):
        save_modality(tmp_path, "d", "text", tokens=["a"], features=np.zeros((1, 2, 2)))


def test_matrix_check_rows_at_least_nonfinite_and_fixes():
    feats = np.ones((4, 2))
    feats[2, 1] = np.nan
    common = dict(source="f.npy", modality="image", rows=3, rows_note="ids run to 2: fix A")
    with pytest.raises(
        FeatureError, match=r"modality 'image' f\.npy has NaN .* 1 rows \(item ids \[2\]\)\. fix B"
    ):
        check_feature_matrix(feats, at_least=True, nonfinite_fix="fix B", **common)
    kept = check_feature_matrix(feats, at_least=True, drop_nonfinite=True, **common)
    np.testing.assert_array_equal(kept, [0, 1, 3])
    with pytest.raises(FeatureError, match=r"f\.npy has 4 rows but ids run to 2: fix A"):
        check_feature_matrix(feats, **common)  # exactly 3 rows asked for
    with pytest.raises(FeatureError, match="has 4 rows but"):
        check_feature_matrix(feats, **{**common, "rows": 5}, at_least=True)
    with pytest.raises(FeatureError, match=r"has dimension 2 .* modalities\.image\.dim = 3"):
        check_feature_matrix(np.ones((3, 2)), dim=3, **common)
    with pytest.raises(FeatureError, match=r"2-D numeric .* shape \(3,\) and dtype <U1"):
        check_feature_matrix(np.array(["a", "b", "c"]), **common)


def test_matrix_reader_takes_torch_tensors_and_names_a_bad_file(tmp_path):
    torch.save(torch.arange(6.0).reshape(3, 2), tmp_path / "feat_v.pt")
    matrix = read_feature_matrix(tmp_path / "feat_v.pt", modality="visual", missing_fix="")
    np.testing.assert_array_equal(matrix, np.arange(6.0).reshape(3, 2))
    (tmp_path / "bad.pt").write_bytes(b"not a tensor")
    with pytest.raises(FeatureError, match=r"modality 'visual' .*bad\.pt is not a torch tensor"):
        read_feature_matrix(tmp_path / "bad.pt", modality="visual", missing_fix="")
    with pytest.raises(FeatureError, match=r"is missing: .*none\.npy does not exist\. Do X\."):
        read_feature_matrix(tmp_path / "none.npy", modality="visual", missing_fix="Do X.")


def test_unknown_spec_key_and_bad_dim():
    with pytest.raises(FeatureError, match="unknown keys"):
        ModalitySpec.from_config("text", {"dims": 3}, folder=".", dataset="d")
    with pytest.raises(FeatureError, match="positive integer"):
        ModalitySpec.from_config("text", {"dim": 0}, folder=".", dataset="d")


def test_a_modality_may_name_the_role_it_plays():
    spec = ModalitySpec.from_config("kg", {"dim": 4, "role": "visual"}, folder=".", dataset="d")
    assert spec.role == "visual"
    assert ModalitySpec.from_config("kg", {}, folder=".", dataset="d").role is None
    with pytest.raises(FeatureError, match=r"modalities.kg.role = 3 .* name of a content role"):
        ModalitySpec.from_config("kg", {"role": 3}, folder=".", dataset="d")


def test_alignment_follows_item_ids_and_pads_row_zero():
    feats = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=np.float32)
    id2token = ["[PAD]", "c", "a", "x"]  # x has no row; b is not in the data
    aligned, missing = align_features(
        ["a", "b", "c"], feats, id2token, policy="zero", modality="text", source="f"
    )
    assert missing == ["x"]
    np.testing.assert_array_equal(aligned.numpy(), [[0, 0], [3, 3], [1, 1], [0, 0]])
    mean, _ = align_features(
        ["a", "b", "c"], feats, id2token, policy="mean", modality="text", source="f"
    )
    np.testing.assert_allclose(mean[3].numpy(), [2.0, 2.0])  # mean of the rows in use (a, c)


def test_alignment_errors():
    feats = np.zeros((1, 2), np.float32)
    with pytest.raises(FeatureError, match="No item of the interaction data"):
        align_features(["z"], feats, ["[PAD]", "a"], policy="mean", modality="t", source="f")
    with pytest.raises(FeatureError, match="although missing_feature_policy is 'drop'"):
        align_features(["a"], feats, ["[PAD]", "a", "b"], policy="drop", modality="t", source="f")
    with pytest.raises(FeatureError, match="not one of mean, zero, drop"):
        align_features(["a"], feats, ["[PAD]", "a"], policy="avg", modality="t", source="f")
