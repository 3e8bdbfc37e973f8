"""The strict new-item split (recbole_mm.data.new_items): labels, loaders, and ID-only models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_mm.data.new_items import (
    DROPPED,
    TEST,
    TRAIN,
    VALID,
    choose_new_items,
    general_split_labels,
    sequential_split_labels,
)
from tests.conftest import seeded_model, tiny_splits


def test_choice_is_seeded_and_of_the_right_size():
    items = np.repeat(np.arange(1, 51), 3)
    a = choose_new_items(items, 60, 0.2, seed=1)
    assert a.sum() == 10 and not a[0] and not a[51:].any()
    assert (choose_new_items(items, 60, 0.2, seed=1) == a).all()
    assert (choose_new_items(items, 60, 0.2, seed=2) != a).any()
    for bad in (0, 1, 1.5, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="new_item_ratio"):
            choose_new_items(items, 60, bad, seed=1)


def test_general_labels_keep_new_items_out_of_training():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 101), 20)
    items = rng.integers(1, 201, size=len(users))
    is_new = choose_new_items(items, 201, 0.2, seed=3)
    labels = general_split_labels(users, items, is_new, seed=3)
    new = is_new[items]
    assert (labels[new] != TRAIN).all()
    assert abs((labels[new] == VALID).mean() - 0.5) < 0.1  # half each, by a coin
    for user in (1, 50):  # the warm interactions of a user split 8:1:1
        warm = labels[(users == user) & ~new]
        n = len(warm)
        assert (warm == VALID).sum() == round(0.9 * n) - round(0.8 * n)
        assert (warm == TEST).sum() == n - round(0.9 * n)
    assert (general_split_labels(users, items, is_new, seed=3) == labels).all()


def test_sequential_labels_cut_each_history_before_its_first_new_item():
    is_new = np.zeros(10, dtype=bool)
    is_new[[7, 8]] = True
    # user 1: items 1 2 3 4 7 5 8 -> rows target 2 3 4 7 5 8 (first history item 1)
    # user 2: items 7 1 2 -> first item new: dropped
    # user 3: items 1 2 3 -> no new item: leave-one-out
    users = np.array([1] * 6 + [2] * 2 + [3] * 2)
    targets = np.array([2, 3, 4, 7, 5, 8, 1, 2, 2, 3])
    first = np.array([1] * 6 + [7] * 2 + [1] * 2)
    labels = sequential_split_labels(users, targets, first, is_new, seed=0)
    assert labels[:3].tolist() == [TRAIN, VALID, TEST]  # warm prefix 1 2 3 4, leave-one-out
    assert labels[3] in (VALID, TEST)  # the first new item, history 1 2 3 4
    assert labels[4:6].tolist() == [DROPPED, DROPPED]  # their histories hold item 7
    assert labels[6:8].tolist() == [DROPPED, DROPPED]
    assert labels[8:].tolist() == [VALID, TEST]


def _pairs(loader):
    dataset = loader._dataset
    return dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]


def test_general_loaders_hold_no_new_item_in_training(tiny_root):
    _, train, valid, test = tiny_splits(tiny_root, "BPR", new_item_ratio=0.2, seed=5)
    new = train._dataset.new_items
    assert int(new.sum()) == 6  # 20% of the tiny dataset's 30 items
    assert not new[_pairs(train)[1]].any()
    held_out = torch.cat([_pairs(valid)[1], _pairs(test)[1]])
    assert new[held_out].sum() > 0 and set(held_out[new[held_out]].tolist()) <= set(
        torch.nonzero(new).flatten().tolist()
    )
    # Training samples (RecBole's loader, as the model sees it) hold no new positive.
    for batch in train:
        assert not new[batch["item_id"]].any()
    again = tiny_splits(tiny_root, "BPR", new_item_ratio=0.2, seed=5)[1]._dataset.new_items
    assert torch.equal(again, new)


def test_sequential_loaders_see_new_items_only_as_validation_or_test_targets(tiny_root):
    _, train, valid, test = tiny_splits(tiny_root, "SASRec", new_item_ratio=0.2, seed=5)
    new = train._dataset.new_items
    inter = train._dataset.inter_feat
    assert not new[inter["item_id"]].any() and not new[inter["item_id_list"]].any()
    for loader in (valid, test):
        inter = loader._dataset.inter_feat
        assert not new[inter["item_id_list"]].any()  # histories were cut before new items
    targets = torch.cat([valid._dataset.inter_feat["item_id"], test._dataset.inter_feat["item_id"]])
    assert new[targets].sum() > 0


def test_an_id_only_model_ranks_new_items_at_random(tmp_path):
    """BPR never sees a new item as a positive: among the new items its ranking is random."""
    from recbole_mm.evaluation import evaluate_new_items
    from recbole_mm.utils import get_trainer
    from tests.conftest import write_tiny_dataset

    write_tiny_dataset(tmp_path / "tiny-mm")
    config, train, valid, test = tiny_splits(
        tmp_path,
        "BPR",
        new_item_ratio=0.2,
        seed=5,
        epochs=30,
        topk=[3],
        metrics=["Recall", "Hit"],
        valid_metric="Recall@3",
        modalities=None,
    )
    model = seeded_model("BPR", config, train)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, model)
    trainer.fit(train, valid, saved=False)
    report = evaluate_new_items(trainer, test)
    n_new = int(train._dataset.new_items.sum())
    among_new = report["new"]["result"]["recall@3"]
    # 6 new items, top 3: a random ranking puts a held-out new item in the top 3 half the time.
    assert abs(among_new - 3 / n_new) < 0.2, among_new
    # Among all items, a never-seen item is pushed down (drawn only as a negative).
    assert report["all"]["result"]["recall@3"] < 3 / 30
    assert report["all"]["n_pairs"] == report["new"]["n_pairs"] > 0


def test_the_benchmark_reports_new_items_among_all_and_among_new(tiny_root, run_in_tmp):
    from recbole_mm.experiments.measure import measure_run
    from recbole_mm.experiments.results import markdown_table, summarise, write_csv
    from tests.conftest import tiny_config

    settings = tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp), new_item_ratio=0.2)
    del settings["modalities"]
    record = measure_run("BPR", "tiny-mm", seed=5, config_dict=settings)
    assert record["new_item_ratio"] == 0.2 and record["new_item_pairs"]["test"] > 0
    among_all, among_new = record["test_new_all_result"], record["test_new_new_result"]
    assert among_new["recall@5"] >= among_all["recall@5"]  # fewer candidates, same targets
    header = markdown_table(summarise([record])).splitlines()[0]
    assert "test ndcg@5 (new items among all)" in header
    assert "test ndcg@5 (new items among new)" in header
    write_csv([record], run_in_tmp / "r.csv")
    assert "test_new_new_ndcg@5" in (run_in_tmp / "r.csv").read_text().splitlines()[0]


def test_a_general_model_under_leave_one_out_is_refused(tiny_root):
    with pytest.raises(ValueError, match="eval_args.split.RS"):
        tiny_splits(
            tiny_root,
            "BPR",
            new_item_ratio=0.2,
            eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        )
