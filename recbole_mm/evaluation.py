"""Evaluation beyond RecBole's evaluator: metrics on a subset of test targets.

``evaluate_cold_start`` splits a sequential model's leave-one-out test targets by how often the
target item occurs in the training split (CEMG's RQ5, cold-start items), for any RecBole
sequential model with ``full_sort_predict``.
"""

from __future__ import annotations

import torch

from recbole_mm.data.dataset import training_pairs


@torch.no_grad()
def evaluate_cold_start(
    model, train_data, eval_data, *, max_interactions: int = 5, topk=(10, 20)
) -> dict:
    """Hit@k and NDCG@k of a sequential model, overall and on cold-start targets (RQ5).

    A target is cold when its item has at most ``max_interactions`` (user, item) pairs in the
    training split. Works for any sequential model with ``full_sort_predict`` (SASRec too).
    Under leave-one-out each row has one target, so Hit@k and NDCG@k equal RecBole's; ties are
    ranked pessimistically (an item scoring as high as the target counts as ahead of it).

    Returns:
        ``{"overall": {"hit@k", "ndcg@k"}, "cold": {...}, "n_overall", "n_cold"}``.
    """
    dataset = train_data._dataset
    _, items = training_pairs(dataset)
    counts = torch.bincount(items, minlength=dataset.item_num)
    was_training = model.training
    model.eval()
    ranks, cold = [], []
    device = next(model.parameters()).device
    for interaction, _, _, positive_i in eval_data:
        scores = model.full_sort_predict(interaction.to(device)).view(len(positive_i), -1)
        scores[:, 0] = float("-inf")
        target = scores.gather(1, positive_i.to(device)[:, None])  # [B, 1]
        ahead = (scores > target).sum(1) + ((scores == target).sum(1) - 1)
        ranks.append(torch.where(torch.isfinite(target[:, 0]), ahead, scores.shape[1]).cpu())
        cold.append(counts[positive_i] <= max_interactions)
    model.train(was_training)
    ranks, cold = torch.cat(ranks), torch.cat(cold)

    def metrics(subset):
        r = ranks[subset].double()
        out = {}
        for k in topk:
            hit = r < k
            out[f"hit@{k}"] = round(float(hit.double().mean()), 4) if len(r) else float("nan")
            ndcg = torch.where(hit, 1.0 / torch.log2(r + 2), torch.zeros_like(r))
            out[f"ndcg@{k}"] = round(float(ndcg.mean()), 4) if len(r) else float("nan")
        return out

    return {
        "overall": metrics(torch.ones_like(cold)),
        "cold": metrics(cold),
        "n_overall": int(len(cold)),
        "n_cold": int(cold.sum()),
    }
