"""Evaluation beyond RecBole's evaluator: metrics on subsets of the held-out targets.

``evaluate_cold_start`` splits the held-out (user, item) targets of a full-ranking evaluation by
how often the target item occurs in the training split: cold-start items (CEMG's RQ5), and the
frequency buckets that show where item content can help a collaborative model. It works for any
RecBole model with ``full_sort_predict``, general (a user's targets are all held-out items, the
training items are masked as RecBole masks them) or sequential (one target per row).
"""

from __future__ import annotations

import torch

from recbole_mm.data.dataset import training_pairs


def training_item_counts(dataset) -> torch.Tensor:
    """Distinct training users of every item, ``[n_items]``, of a general or sequential split."""
    if dataset.config["ITEM_ID_FIELD"] + dataset.config["LIST_SUFFIX"] in dataset.inter_feat:
        _, items = training_pairs(dataset)
    else:
        pairs = torch.stack(
            [dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]]
        )
        items = torch.unique(pairs, dim=1)[1]
    return torch.bincount(items, minlength=dataset.item_num)


@torch.no_grad()
def target_ranks(model, eval_data) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of every held-out target among all items, and the target items.

    Scores are masked as RecBole's full-sort evaluation masks them (the padding item and, for
    general models, the user's training items). Ties are ranked pessimistically: an item that
    scores as high as the target counts as ahead of it. A target whose score is not finite
    (a generative model's item outside its beams) ranks last.

    Shapes:
        returns ``[n_targets]`` ranks (long) and ``[n_targets]`` item ids.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ranks, items = [], []
    for interaction, history_index, positive_u, positive_i in eval_data:
        scores = model.full_sort_predict(interaction.to(device))
        scores = scores.view(-1, eval_data._dataset.item_num).clone()  # [B, n_items]
        scores[:, 0] = float("-inf")
        if history_index is not None:
            scores[history_index] = float("-inf")
        positive_u, positive_i = positive_u.to(device), positive_i.to(device)
        target = scores[positive_u, positive_i]  # [T]
        rows = scores[positive_u]  # [T, n_items]
        ahead = (rows > target[:, None]).sum(1) + (rows == target[:, None]).sum(1) - 1
        ranks.append(torch.where(torch.isfinite(target), ahead, scores.shape[1]).cpu())
        items.append(positive_i.cpu())
    model.train(was_training)
    return torch.cat(ranks), torch.cat(items)


def _target_metrics(ranks: torch.Tensor, topk) -> dict:
    r = ranks.double()
    out = {}
    for k in topk:
        hit = r < k
        out[f"hit@{k}"] = round(float(hit.double().mean()), 4) if len(r) else float("nan")
        ndcg = torch.where(hit, 1.0 / torch.log2(r + 2), torch.zeros_like(r))
        out[f"ndcg@{k}"] = round(float(ndcg.mean()), 4) if len(r) else float("nan")
    return out


def evaluate_cold_start(
    model, train_data, eval_data, *, max_interactions: int = 5, topk=(10, 20), buckets=()
) -> dict:
    """Target-level Hit@k and NDCG@k, overall, on cold-start targets and per frequency bucket.

    A target is cold when its item has at most ``max_interactions`` distinct training users.
    Metrics are means over targets: under leave-one-out (one target per row) Hit@k and NDCG@k
    equal RecBole's; for a general model Hit@k is the share of held-out pairs ranked in the
    user's top k (a micro-averaged recall), not RecBole's per-user mean.

    Args:
        buckets: upper bounds ``(b_1, b_2, ..)`` of extra frequency buckets
            ``[0, b_1], (b_1, b_2], .., (b_last, inf)`` of training users per target item.

    Returns:
        ``{"overall": {"hit@k", "ndcg@k"}, "cold": {...}, "n_overall", "n_cold",
        "buckets": [{"range", "n", **metrics}, ..]}``.
    """
    counts = training_item_counts(train_data._dataset)
    ranks, items = target_ranks(model, eval_data)
    frequency = counts[items]
    cold = frequency <= max_interactions
    report = {
        "overall": _target_metrics(ranks, topk),
        "cold": _target_metrics(ranks[cold], topk),
        "n_overall": int(len(ranks)),
        "n_cold": int(cold.sum()),
        "buckets": [],
    }
    bounds = [-1, *buckets, float("inf")]
    for low, high in zip(bounds, bounds[1:]):
        inside = (frequency > low) & (frequency <= high)
        label = f"{low + 1}-{high}" if high != float("inf") else f">{low}"
        report["buckets"].append(
            {"range": label, "n": int(inside.sum()), **_target_metrics(ranks[inside], topk)}
        )
    return report
