"""User-item graph building blocks: LightGCN propagation and the mean-aggregation graph
convolution, over the adjacencies of :mod:`recbole_mm.data.adjacency`.

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
