"""User-item graph building blocks: the normalised bipartite adjacency and LightGCN propagation.

Reference:
    Xiangnan He et al. "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation." SIGIR 2020 (Eq. 7-9); used by GTC (Eq. 2), MMGRec (Eq. 5) and CEMG.
"""

from __future__ import annotations

import torch
from torch import nn


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
    pairs = torch.unique(torch.stack([users.long(), items.long() + n_users]), dim=1)  # [2, E']
    rows = torch.cat([pairs[0], pairs[1]])
    cols = torch.cat([pairs[1], pairs[0]])
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.clamp(min=1).pow(-0.5) * (degree > 0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n), check_invariants=True
    ).coalesce()


class LightGCNPropagation(nn.Module):
    """Parameter-free LightGCN propagation: the mean of the layer outputs ``A_hat^k E``.

    ``E^(k+1) = A_hat E^(k)`` (Eq. 7 of LightGCN) for ``k < n_layers``, combined by the uniform
    layer average ``sum_k E^(k) / (n_layers + 1)`` (Eq. 8).

    Args:
        n_layers: number of propagation steps (0 returns the input).

    Shapes:
        adjacency: ``[N, N]`` sparse or dense; embeddings: ``[N, d]``; returns ``[N, d]``.
    """

    def __init__(self, *, n_layers: int) -> None:
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers = {n_layers} must be >= 0")
        self.n_layers = n_layers

    def forward(self, adjacency: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        layer = embeddings
        total = embeddings
        for _ in range(self.n_layers):
            layer = torch.sparse.mm(adjacency, layer) if adjacency.is_sparse else adjacency @ layer
            total = total + layer
        return total / (self.n_layers + 1)
