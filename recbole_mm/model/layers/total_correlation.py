"""Contrastive lower bound of the total correlation of several views, and its pairwise counterpart.

Reference:
    GTC, Sec. 3.3, Eq. 6-9; the bound and its sampling follow Symile (Saporta et al., "Contrasting
    with Symile: Simple Model-Agnostic Representation Learning for Unlimited Modalities",
    NeurIPS 2024), which generalises InfoNCE (van den Oord et al., 2018) to any number of views.

Both losses work on one batch of ``N`` aligned rows (row ``i`` of every view is the same
entity) and hold ``N x N`` score matrices: memory grows with the batch, never with the number of
items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def multilinear_inner_product(*views: Tensor) -> Tensor:
    """``h(x, y, z, ..) = sum_d x_d y_d z_d ..`` row by row (GTC Eq. 7).

    Shapes:
        each view: ``[N, d]``; returns ``[N]``.
    """
    product = views[0]
    for view in views[1:]:
        product = product * view
    return product.sum(-1)


def _check_views(views: Sequence[Tensor], minimum: int) -> None:
    if len(views) < minimum:
        raise ValueError(f"got {len(views)} views; the loss needs at least {minimum}.")
    shape = views[0].shape
    if len(shape) != 2 or any(v.shape != shape for v in views):
        raise ValueError(
            f"views must all be [N, d] with the same shape, got {[tuple(v.shape) for v in views]}."
        )


def _prepare(views: Sequence[Tensor], temperature: float, normalize: bool) -> list[Tensor]:
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature} must be > 0.")
    return [F.normalize(v, dim=-1) for v in views] if normalize else list(views)


def total_correlation_loss(
    views: Sequence[Tensor],
    *,
    temperature: float = 1.0,
    normalize: bool = False,
    include_positive: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Symmetrised contrastive estimate of ``TC(views)``, as a loss to minimise (Eq. 7-9).

    For anchor view ``a`` and row ``i`` the positive is the matched tuple and the ``N - 1``
    negatives are the tuples ``j != i`` of the other views sampled from the product of their
    marginals: the first other view at row ``j``, every further one at row ``pi_m(j)`` of an
    independent in-batch permutation ``pi_m`` (Sec. 3.3 shuffles every non-anchor view; fixing
    the first one's order gives the same distribution and keeps the matched tuple out of the
    negatives, which a shuffled first view would put among them for nearly every row when there
    are only two views). The loss of anchor ``a`` is, averaged over the batch,
    ``-h_i / tau + log sum_j exp(h_ij / tau)`` and Eq. 9 sums the anchors' losses.

    The denominator decides what the estimate is. With ``include_positive`` it holds the positive
    and the ``N - 1`` negatives: the cross-entropy of the positive among ``N`` candidates
    (InfoNCE's and Symile's form), never below 0, and ``TC >= log N - loss_a`` in expectation for
    every anchor, the bound of Eq. 8. Without it the denominator holds the negatives only, as
    Eq. 7 is printed; that form has no such bound: its loss falls without limit as the positive's
    score grows (three copies of one uniform variable on 1000 symbols, ``N = 64``, temperature
    0.01: ``log N - loss`` is about 100 nats against a true TC of 13.8).

    Args:
        views: ``M >= 2`` aligned views (GTC: ``S``, ``V_bar``, ``T_bar``). With two views the
            estimate is InfoNCE's, on their mutual information.
        temperature: divides ``h`` (1.0: the paper's unscaled score).
        normalize: L2-normalise every row first (Symile's practice; the paper uses raw vectors).
        include_positive: also count the positive in the denominator (the bound of Eq. 8).
        generator: source of the permutations (seed it for a reproducible loss).

    Shapes:
        each view: ``[N, d]`` with ``N >= 2``; returns a scalar.
    """
    _check_views(views, 2)
    views = _prepare(views, temperature, normalize)
    n = views[0].shape[0]
    device = views[0].device
    target = torch.arange(n, device=device)
    diagonal = torch.eye(n, dtype=torch.bool, device=device)
    total = views[0].new_zeros(())
    for anchor in range(len(views)):
        others = [v for m, v in enumerate(views) if m != anchor]
        positive = multilinear_inner_product(views[anchor], *others)  # [N]
        shuffled = others[0]  # negative tuple j: the first other view at row j, ...
        for view in others[1:]:  # ... every further one at a permuted row
            shuffled = shuffled * view[torch.randperm(n, generator=generator).to(device)]
        logits = views[anchor] @ shuffled.T  # [N, N]: h(anchor_i, negative tuple j)
        if include_positive:
            logits = torch.where(diagonal, positive[:, None], logits) / temperature
            total = total + F.cross_entropy(logits, target)  # Eq. 9: sum over anchors
        else:
            negatives = logits.masked_fill(diagonal, float("-inf")) / temperature  # j != i
            anchor_loss = torch.logsumexp(negatives, dim=1) - positive / temperature  # -Eq. 7
            total = total + anchor_loss.mean()  # Eq. 9: sum over anchors
    return total


def pairwise_contrastive_loss(
    views: Sequence[Tensor], *, temperature: float = 1.0, normalize: bool = False
) -> Tensor:
    """Sum over view pairs of the symmetric in-batch InfoNCE loss (the 'w/o TC' ablation).

    For each pair ``(a, b)`` the scores are ``v_a v_b^T / temperature`` with all other rows of
    the batch as negatives, and the pair's loss is the mean of the ``a -> b`` and ``b -> a``
    cross-entropies; the pair losses are summed (three pairs for three views, matching the
    three anchor terms of :func:`total_correlation_loss`).

    Shapes:
        each view: ``[N, d]`` with ``N >= 2``; returns a scalar.
    """
    _check_views(views, 2)
    views = _prepare(views, temperature, normalize)
    target = torch.arange(views[0].shape[0], device=views[0].device)
    total = views[0].new_zeros(())
    for a in range(len(views)):
        for b in range(a + 1, len(views)):
            logits = views[a] @ views[b].T / temperature  # [N, N]
            total = total + 0.5 * (
                F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
            )
    return total
