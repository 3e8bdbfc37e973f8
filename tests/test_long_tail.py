"""Long-tail metrics (recbole_mm.evaluation.evaluate_long_tail) against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.evaluation import (
    evaluate_item_subset,
    evaluate_long_tail,
    long_tail_mask,
    training_item_counts,
)
from recbole_mm.experiments.results import markdown_table, summarise, write_csv
from tests.conftest import seeded_model, tiny_splits


def trainer_for(config, model, train):
    from recbole_mm.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train)  # as RecBole's fit does
    return trainer


@torch.no_grad()
def hand_metrics(model, eval_data, keep: torch.Tensor, k: int) -> tuple[float, float, int]:
    """Recall@k and NDCG@k averaged over users with a held-out pair in ``keep``, by hand."""
    recalls, ndcgs, pairs = [], [], 0
    model.eval()
    for interaction, history_index, positive_u, positive_i in eval_data:
        scores = model.full_sort_predict(interaction).view(len(interaction), -1).clone()
        scores[:, 0] = -math.inf
        if history_index is not None:
            scores[history_index] = -math.inf
        for row in range(len(interaction)):
            truth = {int(i) for i in positive_i[positive_u == row] if keep[i]}
            if not truth:
                continue
            pairs += len(truth)
            top = scores[row].argsort(descending=True)[:k].tolist()
            hits = [rank for rank, item in enumerate(top) if item in truth]
            recalls.append(len(hits) / len(truth))
            ideal = sum(1 / math.log2(r + 2) for r in range(min(len(truth), k)))
            ndcgs.append(sum(1 / math.log2(r + 2) for r in hits) / ideal)
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs), pairs


@pytest.mark.parametrize("model_name", ["BPR", "LightGCN", "SASRec"])
def test_long_tail_metrics_equal_a_hand_computation_over_the_tail_pairs(tiny_root, model_name):
    config, train, valid, test = tiny_splits(tiny_root, model_name, topk=[5])
    model = seeded_model(model_name, config, train)
    trainer = trainer_for(config, model, train)
    counts = training_item_counts(train._dataset)
    # A limit that puts some but not all held-out pairs in the tail of this tiny data.
    limit = int(counts[1:].float().median())
    keep = long_tail_mask(train._dataset, limit)
    for eval_data in (valid, test):
        report = evaluate_long_tail(trainer, train, eval_data, limit)
        recall, ndcg, pairs = hand_metrics(model, eval_data, keep, 5)
        assert 0 < report["n_pairs"] == pairs < len(eval_data._dataset)
        assert report["result"]["recall@5"] == pytest.approx(recall, abs=1e-4)
        assert report["result"]["ndcg@5"] == pytest.approx(ndcg, abs=1e-4)
        assert report["max_interactions"] == limit


def test_every_item_gives_recboles_overall_figures(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "BPR", topk=[5])
    model = seeded_model("BPR", config, train)
    trainer = trainer_for(config, model, train)
    everything = torch.ones(train._dataset.item_num, dtype=torch.bool)
    everything[0] = False
    subset = evaluate_item_subset(trainer, test, everything)
    overall = trainer.evaluate(test, load_best_model=False)
    assert subset["result"] == pytest.approx({k: float(v) for k, v in overall.items()})
    assert trainer.eval_collector is not None and subset["n_users"] > 0
    # The trainer's collector is back in place: a second overall pass agrees.
    assert trainer.evaluate(test, load_best_model=False) == overall


def test_an_empty_tail_gives_nan_and_no_pair(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "BPR", topk=[5])
    trainer = trainer_for(config, seeded_model("BPR", config, train), train)
    report = evaluate_long_tail(trainer, train, test, 0)  # every tiny item has training users
    assert report["n_pairs"] == 0 and math.isnan(report["result"]["ndcg@5"])


@pytest.mark.parametrize("bad", [-1, "5", 2.5, True])
def test_a_bad_limit_names_the_key(tiny_root, bad):
    _, train, _, _ = tiny_splits(tiny_root, "BPR")
    with pytest.raises(ValueError, match="long_tail_max_interactions"):
        long_tail_mask(train._dataset, bad)


def test_the_benchmark_records_and_tabulates_the_long_tail(tiny_root, run_in_tmp):
    from recbole_mm.experiments.measure import measure_run
    from tests.conftest import tiny_config

    settings = tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp), epochs=1)
    del settings["modalities"]
    record = measure_run(
        "BPR",
        "tiny-mm",
        seed=2020,
        config_dict=settings,
        overrides=["--long_tail_max_interactions=8"],
    )
    assert record["long_tail_max_interactions"] == 8
    assert set(record["test_tail_result"]) == set(record["test_result"])
    assert 0 < record["tail_pairs"]["test"] < record["n_test_pairs"]
    assert record["test_s"] is not None
    rows = summarise([record])
    header = markdown_table(rows).splitlines()[0]
    assert "test ndcg@5 (items <= 8)" in header and "valid ndcg@5 (items <= 8)" in header
    assert "test pairs (items <= 8)" in header
    write_csv([record], run_in_tmp / "r.csv")
    assert "test_tail_ndcg@5" in (run_in_tmp / "r.csv").read_text().splitlines()[0]
    off = measure_run(
        "BPR",
        "tiny-mm",
        seed=2020,
        config_dict=settings,
        overrides=["--long_tail_max_interactions=None"],
    )
    assert "test_tail_result" not in off
    assert "(items <=" not in markdown_table(summarise([off])).splitlines()[0]
