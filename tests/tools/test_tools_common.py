"""k-core filtering, the MMRec x_label split rule and the atomic-file writers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dataset_tools.common import (
    ConversionError,
    clean_text,
    drop_duplicate_pairs,
    kcore_filter,
    mmrec_split,
    mmrec_split_sizes,
    write_inter,
    write_item_file,
)


def frame(rows) -> pd.DataFrame:
    users, items = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "rating": 1.0,
            "timestamp": np.arange(len(rows), dtype=np.int64),
        }
    )


def test_kcore_repeats_until_stable():
    # 3 users x items a,b,c all connected (a 2-core), plus user z on a and d: d has 1
    # interaction (pass 1 drops it), then z has 1 (pass 2 drops z), then all is stable.
    rows = [(u, i) for u in "xyw" for i in "abc"] + [("z", "a"), ("z", "d")]
    kept, rounds = kcore_filter(frame(rows), k=2, source="test")
    assert sorted(set(kept["user_id"])) == ["w", "x", "y"]
    assert sorted(set(kept["item_id"])) == ["a", "b", "c"]
    assert rounds == 3
    assert kept["user_id"].value_counts().min() >= 2
    assert kept["item_id"].value_counts().min() >= 2


def test_kcore_keeps_row_order():
    rows = [(u, i) for u in "xyw" for i in "cab"]
    kept, _ = kcore_filter(frame(rows), k=3, source="test")
    assert kept["timestamp"].tolist() == list(range(9))


def test_kcore_empty_result_names_the_input_and_the_fix():
    with pytest.raises(ConversionError, match=r"reviews\.json.*--k-core"):
        kcore_filter(frame([("u", "i"), ("v", "i")]), k=5, source="reviews.json")


def test_drop_duplicate_pairs_keeps_the_earliest():
    inter = frame([("u", "a"), ("u", "b"), ("u", "a")])
    inter.loc[0, "timestamp"] = 50  # the first row in the file is the later one
    kept, removed = drop_duplicate_pairs(inter)
    assert removed == 1
    assert kept[["item_id", "timestamp"]].values.tolist() == [["b", 1], ["a", 2]]


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(3, (1, 1, 1)), (5, (3, 1, 1)), (9, (7, 1, 1)), (10, (8, 1, 1)), (12, (10, 1, 1)),
     (15, (12, 1, 2)), (20, (16, 2, 2)), (37, (30, 3, 4))],
)  # fmt: skip
def test_mmrec_split_sizes(n, sizes):
    assert mmrec_split_sizes(n) == sizes
    assert sum(sizes) == n


def test_mmrec_split_sizes_match_the_float_rule():
    # MMRec computes vt = int(0.2 * n); n // 5 is the exact form of it.
    for n in range(10, 100_000):
        assert n // 5 == int(0.2 * n)


def test_mmrec_split_sizes_rejects_users_too_small():
    with pytest.raises(ValueError, match="at least 3"):
        mmrec_split_sizes(2)


def split_frame() -> pd.DataFrame:
    rows = [("u5", f"i{j}") for j in range(5)] + [("u12", f"i{j}") for j in range(12)]
    rows += [("tiny", "i0"), ("tiny", "i1")]
    return frame(rows)


def test_mmrec_split_per_user_sizes_and_dropped_users():
    inter = split_frame()
    labels = mmrec_split(inter, seed=7, show_progress=False)
    counts = pd.crosstab(inter["user_id"], labels)  # columns: labels -1, 0, 1, 2
    assert counts.loc["u5"].tolist() == [0, 3, 1, 1]
    assert counts.loc["u12"].tolist() == [0, 10, 1, 1]
    assert counts.loc["tiny"].tolist() == [2, 0, 0, 0]
    assert (labels[inter["user_id"] == "tiny"] == -1).all()


def test_mmrec_split_is_seeded():
    inter = split_frame()
    first = mmrec_split(inter, seed=7, show_progress=False)
    again = mmrec_split(inter, seed=7, show_progress=False)
    np.testing.assert_array_equal(first, again)
    others = [mmrec_split(inter, seed=s, show_progress=False) for s in range(1, 6)]
    assert any(not np.array_equal(first, other) for other in others)


def test_mmrec_split_does_not_depend_on_row_order():
    inter = split_frame()
    labels = pd.Series(mmrec_split(inter, seed=3, show_progress=False), index=inter.index)
    shuffled = inter.sample(frac=1.0, random_state=0)
    relabelled = pd.Series(mmrec_split(shuffled, seed=3, show_progress=False), index=shuffled.index)
    pd.testing.assert_series_equal(labels, relabelled.sort_index())


def test_write_inter_header_and_integer_timestamps(tmp_path):
    path = write_inter(tmp_path / "d.inter", frame([("u", "a"), ("v", "b")]))
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert lines[1] == "u\ta\t1.0\t0"


def test_write_inter_rejects_tokens_with_tabs(tmp_path):
    with pytest.raises(ConversionError, match="tab"):
        write_inter(tmp_path / "d.inter", frame([("u\tx", "a")]))


def test_item_file_strips_what_recbole_cannot_read(tmp_path):
    path = write_item_file(tmp_path / "d.item", ["a", "b"], ['"Big" doll\t12"', ""])
    assert path.read_text().splitlines() == [
        "item_id:token\ttitle:token_seq",
        "a\tBig doll 12",
        "b\t",
    ]


def test_clean_text():
    assert clean_text("<p>Fast &amp; <b>fun</b></p>\n now") == "Fast & fun now"
    assert clean_text(None) == ""
