"""In-batch InfoNCE between two aligned views, one direction, on cosine similarities.

Reference:
    Aaron van den Oord, Yazhe Li and Oriol Vinyals. "Representation Learning with Contrastive
    Predictive Coding." arXiv:1807.03748 (InfoNCE). Used by MGCN (Yu et al., ACM MM 2023) between
    the fused modality view and the behaviour view, once for users and once for items.

The symmetric (both directions) form of several views is
:func:`recbole_mm.model.layers.total_correlation.pairwise_contrastive_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce_loss(anchors: Tensor, positives: Tensor, *, temperature: float) -> Tensor:
    """``mean_i -log( exp(s_ii / tau) / sum_j exp(s_ij / tau) )``, ``s_ij = cos(a_i, p_j)``.

    Row ``i`` of ``positives`` is the positive of anchor ``i``; the other rows of the batch are
    its negatives (the positive is in the denominator, so the loss is at least 0). Repeated rows
    count as they come: a batch that holds one user twice makes each copy a negative of the
    other.

    Args:
        anchors: the first view, one row per batch entry.
        positives: the second view, aligned with ``anchors``.
        temperature: divides the cosine similarities, ``tau > 0``.

    Shapes:
        anchors, positives: ``[N, d]``; returns a scalar.
    """
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature} must be > 0")
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must be the "
            f"same [N, d]"
        )
    similarity = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T  # [N, N]
    target = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(similarity / temperature, target)
