"""Evaluation beyond RecBole's evaluator: metrics on subsets of the held-out targets.

``evaluate_long_tail`` gives RecBole's own metrics (its ``Collector`` and ``Evaluator``, the
same code as the overall figures) over the held-out pairs whose item has at most
``long_tail_max_interactions`` training users (CEMG's RQ5); ``python -m recbole_mm.benchmark``
reports them beside the overall metrics.

``evaluate_cold_start`` splits the held-out (user, item) targets of a full-ranking evaluation by
how often the target item occurs in the training split: cold-start items (CEMG's RQ5), and the
frequency buckets that show where item content can help a collaborative model. It works for any
RecBole model with ``full_sort_predict``, general (a user's targets are all held-out items, the
training items are masked as RecBole masks them) or sequential (one target per row).
"""

from __future__ import annotations

import math

import torch
from recbole.evaluator import Collector

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
def evaluation_history(eval_data, *, n_users: int) -> torch.Tensor | None:
    """The items RecBole's full-sort evaluation of ``eval_data`` masks, per user.

    RecBole's ``FullSortEvalDataLoader`` builds, for a general (non-sequential) model, each
    user's history as the items used up to this phase minus the phase's positives (validation:
    the training items; test: training and validation items), and
    ``Trainer._full_sort_batch_eval`` sets their scores to ``-inf``. A sequential loader masks
    nothing but item 0: ``None``.

    Returns:
        ``[n_users, H]`` long, 0-padded, sorted per row; ``None`` for a sequential loader.
    """
    per_user = getattr(eval_data, "uid2history_item", None)
    if getattr(eval_data, "is_sequential", False) or per_user is None:
        return None
    rows = [torch.as_tensor(h if h is not None else [], dtype=torch.long) for h in per_user]
    rows += [torch.zeros(0, dtype=torch.long)] * (n_users - len(rows))
    width = max([r.numel() for r in rows] + [1])
    history = torch.zeros(n_users, width, dtype=torch.long)
    for user, items in enumerate(rows):
        history[user, : items.numel()] = items.sort().values
    return history


def target_ranks(model, eval_data) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of every held-out target among all items, and the target items.

    Scores are masked as RecBole's full-sort evaluation masks them (the padding item and, for
    general models, the user's training items). Ties are ranked pessimistically: an item that
    scores as high as the target counts as ahead of it. A target whose score is not finite
    (a generative model's item outside its beams) ranks last. A model with
    ``prepare_evaluation`` (MMGRec) is told the loader first, as ``MultiStageTrainer.evaluate``
    does, so that its beams skip what this loader masks (at test: the validation items too), and
    is set back to its training-items mask afterwards.

    Shapes:
        returns ``[n_targets]`` ranks (long) and ``[n_targets]`` item ids.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prepare = getattr(model, "prepare_evaluation", None)
    if prepare is not None:
        prepare(eval_data)
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
    if prepare is not None:
        prepare(None)
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


# ---------------------------------------------------------------------------------------------
# RecBole's metrics on the held-out pairs of a subset of items (the long tail)

LONG_TAIL_KEY = "long_tail_max_interactions"
# What RecBole's evaluator learns from the training data (Collector.data_collect), copied over.
_TRAINING_FACTS = ("data.num_items", "data.num_users", "data.count_items", "data.count_users")


def long_tail_mask(train_dataset, max_interactions: int) -> torch.Tensor:
    """``[n_items]`` bool: items with at most ``max_interactions`` distinct training users
    (:func:`training_item_counts`); the padding item 0 is never in it."""
    if isinstance(max_interactions, bool) or not isinstance(max_interactions, int):
        raise ValueError(
            f"{LONG_TAIL_KEY} = {max_interactions!r} must be an integer >= 0 (the most training "
            f"interactions of a long-tail item, e.g. 5) or ~ to switch the long-tail metrics off."
        )
    if max_interactions < 0:
        raise ValueError(f"{LONG_TAIL_KEY} = {max_interactions} must be >= 0 (or ~: off).")
    keep = training_item_counts(train_dataset) <= max_interactions
    keep[0] = False
    return keep


class ItemSubsetCollector(Collector):
    """RecBole's :class:`~recbole.evaluator.Collector` that keeps only the held-out pairs whose
    item is in ``keep``: a user's ground truth becomes its held-out items of the subset, and
    users without one are left out. Every item stays a candidate, as in the overall ranking.

    With ``candidates`` (``[n_items]`` bool), only those items are ranked: the others score
    ``-inf`` (e.g. the rank of a new item among the new items only).

    Counts the pairs (``n_pairs``) and users (``n_users``) it kept.
    """

    def __init__(self, config, keep: torch.Tensor, candidates: torch.Tensor | None = None):
        super().__init__(config)
        self.candidates = candidates
        if config["eval_type"].name != "RANKING":
            raise ValueError(
                f"{LONG_TAIL_KEY}: subset metrics need ranking metrics, not {config['metrics']}"
            )
        self.keep = keep
        self.n_pairs = 0
        self.n_users = 0

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        inside = self.keep.to(positive_i.device)[positive_i]  # [T]
        if not bool(inside.any()):
            return
        rows, new_u = torch.unique(positive_u[inside], return_inverse=True)
        self.n_pairs += int(inside.sum())
        self.n_users += len(rows)
        scores = scores_tensor[rows]
        if self.candidates is not None:
            scores[:, ~self.candidates.to(scores.device)] = float("-inf")
        super().eval_batch_collect(scores, interaction[rows.cpu()], new_u, positive_i[inside])


@torch.no_grad()
def evaluate_item_subset(
    trainer, eval_data, keep: torch.Tensor, candidates: torch.Tensor | None = None
) -> dict:
    """RecBole's metrics of ``trainer.model`` as it is now, over the held-out pairs of
    ``eval_data`` whose item is in ``keep``.

    The model is scored by ``trainer.evaluate`` itself (its full-sort or sampled path, masks and
    any ``prepare_evaluation`` of generative models), with :class:`ItemSubsetCollector` in place
    of the trainer's collector for that one pass; RecBole's ``Evaluator`` computes the metrics.

    Args:
        trainer: a RecBole trainer (``config``, ``model``, ``eval_collector``, ``evaluate``).
        eval_data: a validation or test loader.
        keep: ``[n_items]`` bool: the held-out pairs of these items are the ground truth.
        candidates: ``[n_items]`` bool: rank among these items only (default: every item).

    Returns:
        ``{"result": {metric: value}, "n_pairs", "n_users"}``; every value is NaN when no pair
        is in the subset.
    """
    collector = ItemSubsetCollector(trainer.config, keep, candidates)
    for fact in _TRAINING_FACTS:
        if fact in trainer.eval_collector.data_struct:
            collector.data_struct.set(fact, trainer.eval_collector.data_struct.get(fact))
    items = eval_data._dataset.inter_feat[eval_data._dataset.iid_field]
    if not bool(keep[items].any()):
        names = [
            f"{m.lower()}@{k}" for m in trainer.config["metrics"] for k in trainer.config["topk"]
        ]
        return {"result": {name: math.nan for name in names}, "n_pairs": 0, "n_users": 0}
    original = trainer.eval_collector
    trainer.eval_collector = collector
    try:
        result = trainer.evaluate(eval_data, load_best_model=False)
    finally:
        trainer.eval_collector = original
    return {
        "result": {k: float(v) for k, v in (result or {}).items()},
        "n_pairs": collector.n_pairs,
        "n_users": collector.n_users,
    }


def evaluate_long_tail(trainer, train_data, eval_data, max_interactions: int = 5) -> dict:
    """RecBole's metrics over the held-out pairs whose item has at most ``max_interactions``
    distinct training users (CEMG's RQ5: five or fewer), with :func:`evaluate_item_subset`.

    Returns:
        ``{"max_interactions", "result", "n_pairs", "n_users"}``.
    """
    keep = long_tail_mask(train_data._dataset, max_interactions)
    return {"max_interactions": max_interactions, **evaluate_item_subset(trainer, eval_data, keep)}


def evaluate_new_items(trainer, eval_data) -> dict:
    """RecBole's metrics over the held-out pairs of the new items of a strict new-item split
    (:mod:`recbole_mm.data.new_items`; the loader's dataset carries ``new_items``), ranked
    among all items and among the new items only.

    Returns:
        ``{"all": {"result", "n_pairs", "n_users"}, "new": {...}}``.
    """
    new = eval_data._dataset.new_items
    return {
        "all": evaluate_item_subset(trainer, eval_data, new),
        "new": evaluate_item_subset(trainer, eval_data, new, candidates=new),
    }
