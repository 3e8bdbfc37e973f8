"""RecBole's own full-sort scoring path, for tests of what its evaluator counts as a hit."""

from __future__ import annotations

import torch
from recbole.evaluator.collector import Collector
from recbole.trainer import Trainer


def recbole_hits(config, model, batch) -> torch.Tensor:
    """Hits in the top ``max(topk)`` of each row, as RecBole's evaluator counts them.

    ``batch`` is ``(interaction, history_index, positive_u, positive_i)`` as a
    ``FullSortEvalDataLoader`` yields it. The scores go through
    ``Trainer._full_sort_batch_eval`` (``full_sort_predict``, then item 0 and the history set to
    ``-inf``) and ``Collector.eval_batch_collect`` (``torch.topk``, then a lookup of the
    positives), so a ``-inf`` item that ``topk`` picks and that is a positive counts.

    Returns:
        long ``[B]``.
    """
    trainer = Trainer(config, model)
    trainer.tot_item_num = model.n_items
    model.eval()
    with torch.no_grad():
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
    collector = Collector(config)
    collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
    topk = collector.get_data_struct().get("rec.topk")  # [B, k + 1]: hit flags, n positives
    return topk[:, :-1].sum(1)
