"""The MMRec importer: the split survives exactly, and bad folders fail with clear messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tools_fixtures import write_mmrec_folder

from dataset_tools.common import ConversionError
from dataset_tools.mmrec import import_mmrec
from recbole_mm.data.features import ModalitySpec, load_modality


def test_round_trip_keeps_split_rows_and_feature_rows(tmp_path):
    facts = write_mmrec_folder(tmp_path / "baby")
    report = import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="amazon-baby")
    folder = tmp_path / "out" / "amazon-baby"
    rows = [line.split("\t") for line in facts["lines"]]
    for label, part in enumerate(("train", "valid", "test")):
        written = pd.read_csv(folder / f"amazon-baby.{part}.inter", sep="\t", dtype=str)
        expected = [r for r in rows if r[4] == str(label)]
        assert written["user_id:token"].tolist() == [r[0] for r in expected]
        assert written["item_id:token"].tolist() == [r[1] for r in expected]
        assert written["timestamp:float"].tolist() == [r[3] for r in expected]
        assert report["split_sizes"][part] == len(expected)
    for modality in ("text", "image"):
        tokens, matrix = load_modality(
            ModalitySpec.from_config(modality, None, folder=folder, dataset="amazon-baby")
        )
        assert tokens == [str(i) for i in range(len(facts[modality]))]
        np.testing.assert_array_equal(matrix, facts[modality])
    assert report["features"]["image"]["dim"] == 16
    assert not (folder / "amazon-baby.inter").exists()


def test_only_the_features_asked_for(tmp_path):
    write_mmrec_folder(tmp_path / "baby")
    (tmp_path / "baby" / "image_feat.npy").unlink()
    report = import_mmrec(
        mmrec_dir=tmp_path / "baby",
        out=tmp_path / "out",
        name="b",
        features={"text": "text_feat.npy"},
    )
    assert set(report["features"]) == {"text"}


def test_missing_feature_file_says_how_to_skip_it(tmp_path):
    write_mmrec_folder(tmp_path / "baby")
    (tmp_path / "baby" / "image_feat.npy").unlink()
    with pytest.raises(ConversionError, match=r"image_feat\.npy does not exist.*--features"):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")


def test_bad_x_label(tmp_path):
    write_mmrec_folder(tmp_path / "baby", labels_override={4: "3", 9: "x"})
    with pytest.raises(ConversionError, match=r"x_label must be 0.*2 rows.*lines \[6, 11\]"):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")


def test_nan_rows_fail_or_are_dropped(tmp_path):
    write_mmrec_folder(tmp_path / "baby", nan_rows=(2,))
    with pytest.raises(ConversionError, match=r"NaN or infinite values in 1 rows \(item ids \[2\]"):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")
    report = import_mmrec(
        mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b", drop_nan_rows=True
    )
    tokens = (tmp_path / "out" / "b" / "b.image.tokens").read_text().split()
    assert "2" not in tokens and len(tokens) == 6
    assert report["features"]["image"]["items_without_row"] == 1


def test_too_few_feature_rows(tmp_path):
    write_mmrec_folder(tmp_path / "baby", feature_rows=5)
    with pytest.raises(
        ConversionError, match="has 5 rows but the interactions use item ids up to 6"
    ):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")


def test_a_truncated_feature_file_is_named_with_the_fix(tmp_path):
    write_mmrec_folder(tmp_path / "baby")
    image = tmp_path / "baby" / "image_feat.npy"
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(ConversionError, match="modality 'image' .*image_feat.npy is truncated"):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")


def test_folder_with_two_inter_files(tmp_path):
    write_mmrec_folder(tmp_path / "baby")
    (tmp_path / "baby" / "other.inter").write_text("userID\titemID\tx_label\n")
    with pytest.raises(ConversionError, match="exactly one \\*.inter.*--inter-file"):
        import_mmrec(mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b")
    import_mmrec(
        mmrec_dir=tmp_path / "baby", out=tmp_path / "out", name="b", inter_file="baby.inter"
    )


def test_missing_columns(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "d.inter").write_text("user\titem\n0\t1\n")
    with pytest.raises(ConversionError, match=r"lacks \['userID', 'itemID', 'x_label'\]"):
        import_mmrec(mmrec_dir=tmp_path / "d", out=tmp_path / "out", name="b", features={})
