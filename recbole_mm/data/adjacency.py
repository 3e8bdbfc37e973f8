"""The normalised adjacencies of a split's user-item graph (users first, then items), which
:meth:`recbole_mm.data.dataset.MultimodalDataset.normalized_adjacency` builds for the models.

References:
    Xiangnan He et al. "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation." SIGIR 2020 (Eq. 7, the symmetric norm).
    Will Hamilton et al. "Inductive Representation Learning on Large Graphs." NeurIPS 2017 (the
    mean aggregator; MMGRec Eq. 5).
"""

from __future__ import annotations

import torch


def _both_directions(users, items, *, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of every distinct (user, item) edge in both directions, item nodes
    offset by ``n_users``."""
    pairs = torch.unique(torch.stack([users.long(), items.long() + n_users]), dim=1)  # [2, E']
    return torch.cat([pairs[0], pairs[1]]), torch.cat([pairs[1], pairs[0]])


def normalized_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    n_users: int,
    n_items: int,
) -> torch.Tensor:
    """The symmetric-normalised adjacency of the user-item graph, as a sparse COO tensor.

    ``A_hat = D^{-1/2} A D^{-1/2}`` with ``A = [[0, R], [R^T, 0]]`` over ``n_users + n_items``
    nodes (users first, then items); repeated (user, item) pairs count once, isolated nodes get
    an all-zero row.

    Args:
        users, items: ids of the observed interactions (training split only).
        n_users, n_items: node counts, padding ids included (RecBole's ``num`` values).

    Shapes:
        users, items: ``[E]``; returns ``[n_users + n_items, n_users + n_items]``.
    """
    if users.shape != items.shape or users.dim() != 1:
        raise ValueError(
            f"users {tuple(users.shape)} and items {tuple(items.shape)} must be 1-D and equal"
        )
    n = n_users + n_items
    rows, cols = _both_directions(users, items, n_users=n_users)
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.clamp(min=1).pow(-0.5) * (degree > 0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n), check_invariants=True
    ).coalesce()


def mean_adjacency(
    users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int
) -> torch.Tensor:
    """Row-normalised adjacency ``D^-1 A`` of the user-item graph (users first), sparse.

    Row ``v`` averages the neighbours of node ``v`` (the ``1/|N_i|`` sum of MMGRec's Eq. 5);
    repeated pairs count once; isolated nodes get an all-zero row.

    Args:
        users, items: ids of the observed interactions (training split only).
        n_users, n_items: node counts, padding ids included (RecBole's ``num`` values).

    Shapes:
        users, items: ``[E]``; returns ``[n_users + n_items, n_users + n_items]``.
    """
    n = n_users + n_items
    rows, cols = _both_directions(users, items, n_users=n_users)
    degree = torch.bincount(rows, minlength=n).float().clamp(min=1)
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), 1.0 / degree[rows], (n, n), check_invariants=True
    ).coalesce()


def user_item_block(adjacency: torch.Tensor, *, n_users: int) -> torch.Tensor:
    """The users' rows and items' columns of a bipartite adjacency (users first), sparse.

    Shapes:
        adjacency: ``[n_users + n_items]^2`` sparse; returns ``[n_users, n_items]``.
    """
    adjacency = adjacency.coalesce()
    rows, cols = adjacency.indices()
    keep = (rows < n_users) & (cols >= n_users)
    n_items = adjacency.shape[0] - n_users
    return torch.sparse_coo_tensor(
        torch.stack([rows[keep], cols[keep] - n_users]),
        adjacency.values()[keep],
        (n_users, n_items),
        check_invariants=True,
    ).coalesce()


ADJACENCY_NORMS = {"symmetric": normalized_adjacency, "mean": mean_adjacency}
