"""In-batch InfoNCE between two aligned views, one direction, on cosine similarities.

Reference:
    Aaron van den Oord, Yazhe Li and Oriol Vinyals. "Representation Learning with Contrastive
    Predictive Coding." arXiv:1807.03748 (InfoNCE). Used by MGCN (Yu et al., ACM MM 2023) between
    the fused modality view and the behaviour view, once for users and once for items, and by
    LGMRec (Guo et al., AAAI 2024) between two modalities' global embeddings (L_hcl).

The symmetric (both directions) form of several views is
:func:`recbole_mm.model.layers.total_correlation.pairwise_contrastive_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce_loss(
    anchors: Tensor,
    positives: Tensor,
    *,
    temperature: float,
    candidates: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``-log( exp(s(a_i, p_i) / tau) / sum_j exp(s(a_i, c_j) / tau) )`` per anchor, ``s`` the
    cosine similarity, reduced over the anchors (``mean`` or ``sum``).

    In-batch (``candidates`` None, MGCN): the candidates are the rows of ``positives``, row
    ``i`` the positive of anchor ``i`` and the other rows its negatives. Repeated rows count as
    they come: a batch that holds one user twice makes each copy a negative of the other.
    With ``candidates`` (LGMRec: every user or item of the other view), the positive must be
    among them for the loss to be at least 0.

    Args:
        anchors: the first view, one row per batch entry.
        positives: the second view, aligned with ``anchors``.
        temperature: divides the cosine similarities, ``tau > 0``.
        candidates: the denominator's rows; None: ``positives``.
        reduction: ``mean`` or ``sum`` over the anchors.

    Shapes:
        anchors, positives: ``[N, d]``; candidates: ``[C, d]``; returns a scalar.
    """
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature} must be > 0")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction = {reduction!r} must be 'mean' or 'sum'")
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must be the "
            f"same [N, d]"
        )
    if candidates is None:
        similarity = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T  # [N, N]
        target = torch.arange(anchors.shape[0], device=anchors.device)
        return F.cross_entropy(similarity / temperature, target, reduction=reduction)
    anchors, positives, candidates = (
        F.normalize(x, dim=-1) for x in (anchors, positives, candidates)
    )
    positive_score = (anchors * positives).sum(-1) / temperature  # [N]
    all_scores = anchors @ candidates.T / temperature  # [N, C]
    losses = torch.logsumexp(all_scores, dim=-1) - positive_score  # [N]
    return losses.sum() if reduction == "sum" else losses.mean()
