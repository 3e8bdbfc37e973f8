"""Broken atomic files and feature matrices: each named, with what is wrong and the fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TINY, tiny_config

from recbole_mm.config import Config
from recbole_mm.data.dataset import AtomicFileError, check_atomic_file
from recbole_mm.data.features import FeatureError, ModalitySpec, load_modality, save_modality
from recbole_mm.utils import create_dataset

HEADER = "user_id:token\titem_id:token\trating:float\n"
ROWS = "u1\ti1\t3\nu2\ti2\t4\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"\.inter is empty: an atomic file starts with a header of name:type columns"),
        ("\n" + ROWS, r"\.inter has an empty first line"),
        (
            "user_id\titem_id:token\trating:float\n" + ROWS,
            r"column 1 of the header, 'user_id', is not name:type\. Every column needs a type",
        ),
        (
            HEADER.replace("\t", ",") + ROWS.replace("\t", ","),
            r"\.inter looks comma-separated .* field_separator is a tab\. Convert the file to "
            r"tab-separated columns .* or set field_separator: ','",
        ),
        (
            HEADER.replace("user_id:token", "user_id:tokn") + ROWS,
            r"'user_id:tokn', has type 'tokn', which RecBole does not know: did you mean "
            r"'user_id:token'\? The types are token, float, token_seq, float_seq",
        ),
        (HEADER, r"\.inter has a header but no rows: add the data"),
    ],
    ids=["empty", "blank-header", "no-type", "comma", "misspelt-type", "header-only"],
)
def test_broken_inter_file_is_named_with_the_fix(tmp_path, text, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.inter").write_text(text)
    config = Config(model="BPR", dataset="bad", config_dict=tiny_config(tmp_path, load_col=None))
    with pytest.raises(AtomicFileError, match=message) as err:
        create_dataset(config)
    assert str(folder / "bad.inter") in str(err.value)
    assert "after filtering" not in str(err.value)


def test_a_well_formed_file_and_other_separators_pass(tmp_path):
    path = tmp_path / "ok.inter"
    path.write_text(HEADER + ROWS)
    check_atomic_file(path)
    path.write_text(HEADER.replace("\t", ",") + ROWS.replace("\t", ","))
    check_atomic_file(path, separator=",")  # field_separator: "," is RecBole's own option


def test_broken_item_file_is_checked_too(tmp_path):
    folder = tmp_path / TINY
    shutil.copytree(_tiny_folder(tmp_path), folder)
    (folder / f"{TINY}.item").write_text("item_id:token\ttitle:txt\ni1\tA\n")
    config = Config(model="BPR", dataset=TINY, config_dict=tiny_config(tmp_path))
    with pytest.raises(AtomicFileError, match=r"\.item: column 2 .* type 'txt'"):
        create_dataset(config)


def _tiny_folder(tmp_path):
    from conftest import write_tiny_dataset

    source = tmp_path / "source" / TINY
    write_tiny_dataset(source)
    return source


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "is truncated or corrupt"),
        (lambda b: b[:40], "is truncated or corrupt"),
        (lambda b: b"", "is empty: it is not a numpy.save file"),
        (lambda b: b"epochs: 3\n", "does not start as a .npy file does"),
    ],
    ids=["half", "header-cut", "empty", "text"],
)
def test_broken_feature_matrix_is_named_with_the_fix(tmp_path, damage, message):
    feature_file, _ = save_modality(
        tmp_path, "d", "text", tokens=["a", "b", "c"], features=np.ones((3, 4))
    )
    feature_file.write_bytes(damage(feature_file.read_bytes()))
    spec = ModalitySpec.from_config("text", {}, folder=tmp_path, dataset="d")
    with pytest.raises(FeatureError, match=message) as err:
        load_modality(spec)
    assert str(feature_file) in str(err.value) and "modality 'text'" in str(err.value)
    assert "Write it again" in str(err.value)
