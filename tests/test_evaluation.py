"""Target-level evaluation on subsets (recbole_mm.evaluation) against RecBole's own hit counts."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.evaluation import evaluate_cold_start, target_ranks, training_item_counts
from recbole_mm.model.layers.semantic_ids import history_mask
from recbole_mm.smoke import tiny_settings
from tests.conftest import seeded_model, tiny_splits
from tests.models.recbole_ranking import recbole_hits


@pytest.mark.parametrize("model_name", ["BPR", "VBPR"])
def test_general_target_ranks_count_the_hits_recbole_counts(tiny_root, model_name):
    config, train, _, test = tiny_splits(tiny_root, model_name, topk=[5])
    model = seeded_model(model_name, config, train)
    ranks, items = target_ranks(model, test)
    assert len(ranks) == len(items) == len(test._dataset)  # every held-out pair, once
    expected = sum(int(recbole_hits(config, model, batch).sum()) for batch in test)
    assert int((ranks < 5).sum()) == expected > 0


def test_generative_target_ranks_exclude_what_the_evaluated_loader_masks(tiny_root):
    """MMGRec's beams skip what RecBole masks in the evaluation at hand (prepare_evaluation):
    at test, the validation items too. target_ranks must tell the model which loader it ranks
    for, as MultiStageTrainer.evaluate does, or the beams spent on validation items leave rows
    short of top-k and the hits disagree with RecBole's."""
    settings = tiny_settings("MMGRec", n_layers=2, inner_size=16, dropout_prob=0.0)
    config, train, _, test = tiny_splits(tiny_root, "MMGRec", **{**settings, "topk": [5]})
    model = seeded_model("MMGRec", config, train)
    model.set_stage("generator")
    ranks, items = target_ranks(model, test)
    assert len(ranks) == len(test._dataset)
    users = next(iter(test))[0][model.USER_ID]
    training = history_mask(model.train_history[users], n_items=model.n_items)
    assert torch.equal(model._masked(users), training)  # left as it was found
    model.prepare_evaluation(test)
    expected = sum(int(recbole_hits(config, model, batch).sum()) for batch in test)
    assert int((ranks < 5).sum()) == expected > 0


def test_training_items_and_ties_rank_as_recbole_masks_them(tiny_root):
    _, train, _, test = tiny_splits(tiny_root, "BPR")
    n_items = train._dataset.item_num

    class Constant(torch.nn.Module):
        """Every item scores 1, except item 1, which scores 2."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def full_sort_predict(self, interaction):
            scores = torch.ones(len(interaction), n_items)
            scores[:, 1] = 2.0
            return scores

    ranks, _ = target_ranks(Constant(), test)
    expected = []
    for interaction, history_index, positive_u, positive_i in test:
        masked = [set() for _ in range(len(interaction))]
        for row, item in zip(*history_index):
            masked[int(row)].add(int(item))
        for u, i in zip(positive_u.tolist(), positive_i.tolist()):
            # Ties rank pessimistically: among n candidates that score alike (every real item
            # but item 1 and the user's masked training items) a target ranks n - 1 (0-based).
            candidates = (n_items - 2) - len(masked[u] - {1})
            expected.append(0 if i == 1 else candidates - 1 + (1 not in masked[u]))
    assert ranks.tolist() == expected


def test_frequency_buckets_partition_the_targets(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "BPR", topk=[5])
    model = seeded_model("BPR", config, train)
    report = evaluate_cold_start(model, train, test, max_interactions=2, topk=(5,), buckets=(2, 5))
    assert [b["range"] for b in report["buckets"]] == ["0-2", "3-5", ">5"]
    assert sum(b["n"] for b in report["buckets"]) == report["n_overall"]
    assert report["buckets"][0]["n"] == report["n_cold"]
    counts = training_item_counts(train._dataset)
    pairs = torch.unique(
        torch.stack([train._dataset.inter_feat["user_id"], train._dataset.inter_feat["item_id"]]),
        dim=1,
    )
    assert int(counts.sum()) == pairs.shape[1]
