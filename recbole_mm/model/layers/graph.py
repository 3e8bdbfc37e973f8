"""User-item graph building blocks: the normalised bipartite adjacencies, LightGCN propagation
and the mean-aggregation graph convolution.

References:
    Xiangnan He et al. "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation." SIGIR 2020 (Eq. 7-9); used by GTC (Eq. 2) and CEMG.
    Will Hamilton et al. "Inductive Representation Learning on Large Graphs." NeurIPS 2017 (the
    mean aggregator); used by MMGRec (Eq. 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    pairs = torch.unique(torch.stack([users.long(), items.long() + n_users]), dim=1)
    rows = torch.cat([pairs[0], pairs[1]])
    cols = torch.cat([pairs[1], pairs[0]])
    degree = torch.bincount(rows, minlength=n).float().clamp(min=1)
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), 1.0 / degree[rows], (n, n), check_invariants=True
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


class MeanGraphConv(nn.Module):
    """Mean-aggregation graph convolution with separate self/neighbour weights (MMGRec Eq. 5).

    ``h_v^(y) = LeakyReLU(h_v^(y-1) W_1^(y) + mean_{w in N(v)} h_w^(y-1) W_2^(y))`` for users and
    items alike (GraphSAGE's mean aggregator, Hamilton et al. 2017).

    Args:
        dims: widths ``[d_0, d_1, ..., d_Y]`` (``Y`` layers).
        negative_slope: of the LeakyReLU.

    Shapes:
        adjacency: ``[N, N]`` row-normalised (sparse or dense); x: ``[N, d_0]``; returns ``[N, d_Y]``.
    """

    def __init__(self, *, dims: Sequence[int], negative_slope: float = 0.01) -> None:
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MeanGraphConv needs at least one layer, got dims = {list(dims)}")
        self.self_weights = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])
        )
        self.neighbour_weights = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])
        )
        self.negative_slope = negative_slope

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for w1, w2 in zip(self.self_weights, self.neighbour_weights):
            neighbours = torch.sparse.mm(adjacency, x) if adjacency.is_sparse else adjacency @ x
            x = F.leaky_relu(w1(x) + w2(neighbours), self.negative_slope)  # Eq. 5
        return x
