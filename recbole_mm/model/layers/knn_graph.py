"""Item-item graphs from content: the k-nearest-neighbour graph of a feature matrix, normalised,
and the weighted sum of several modalities' graphs.

References:
    Jinghao Zhang et al. "Mining Latent Structures for Multimedia Recommendation." ACM MM 2021
    (LATTICE: kNN sparsification of a cosine-similarity graph, symmetric normalisation).
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." ACM MM 2023 (FREEDOM: the same graph built once from the raw
    features and frozen; the modalities' graphs summed with weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

# Rows of the similarity matrix computed at once: bounds the dense block to chunk x n_items.
SIMILARITY_CHUNK = 2048


def knn_item_graph(
    features: torch.Tensor,
    *,
    k: int,
    padding_idx: int | None = 0,
    weighted: bool = False,
    chunk_size: int = SIMILARITY_CHUNK,
) -> torch.Tensor:
    """The normalised kNN graph of ``features`` by cosine similarity, as a sparse COO tensor.

    1. ``S_ij = cos(x_i, x_j)`` (cosine similarity of the raw features);
    2. ``S_hat_ij = 1`` if ``j`` is among the ``k`` largest of row ``i``, else 0 (the row's own
       item included: its similarity, 1, is the largest); with ``weighted``, ``S_hat_ij`` keeps
       the similarity itself, floored at 0 (LATTICE), and gradients reach ``features``;
    3. ``S_tilde = D^-1/2 S_hat D^-1/2`` with ``D`` the diagonal of ``S_hat``'s row sums.

    A row of zeros (an item without content) has similarity 0 to every item, so it still picks
    ``k`` neighbours (ties broken by ``torch.topk``) as the authors' code would; the padding row
    ``padding_idx`` (RecBole's item 0) gets no neighbours and is nobody's neighbour.

    Args:
        features: one modality's item features.
        k: neighbours kept per row; at most the number of non-padding items.
        padding_idx: a row left out of the graph, or None.
        weighted: keep the similarities (differentiable) instead of ones (FREEDOM's frozen graph).
        chunk_size: rows of ``S`` computed at once (memory ``chunk_size x n_items``).

    Shapes:
        features: ``[n_items, d]``; returns ``[n_items, n_items]``, ``k`` entries per
        non-padding row.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [n_items, d], got {tuple(features.shape)}")
    n_items = features.shape[0]
    n_real = n_items - (padding_idx is not None)
    if not 1 <= k <= n_real:
        raise ValueError(f"knn_k = {k} must be between 1 and the number of items ({n_real})")
    unit = F.normalize(features.float(), dim=1)  # x / ||x||, zero rows stay zero
    rows = torch.arange(n_items, device=features.device)
    if padding_idx is not None:
        rows = rows[rows != padding_idx]
    neighbours, similarities = [], []
    for start in range(0, len(rows), chunk_size):
        block = rows[start : start + chunk_size]
        similarity = unit[block] @ unit.T  # step 1, [chunk, n_items]
        if padding_idx is not None:
            similarity = similarity.index_fill(
                1, torch.tensor([padding_idx], device=features.device), float("-inf")
            )
        top = similarity.topk(k, dim=1)  # step 2, [chunk, k]
        neighbours.append(top.indices)
        similarities.append(top.values)
    cols = torch.cat(neighbours).reshape(-1)
    src = rows.repeat_interleave(k)
    if weighted:
        edge = torch.cat(similarities).reshape(-1).clamp(min=0)
    else:
        edge = torch.ones(len(src), device=features.device)
    degree = torch.zeros(n_items, device=features.device).index_add(0, src, edge)  # row sums
    inv_sqrt = torch.where(degree > 0, degree, torch.ones_like(degree)).pow(-0.5) * (degree > 0)
    values = inv_sqrt[src] * edge * inv_sqrt[cols]  # step 3
    return torch.sparse_coo_tensor(
        torch.stack([src, cols]), values, (n_items, n_items), check_invariants=True
    ).coalesce()


def weighted_graph_sum(graphs: Mapping[str, torch.Tensor], weights: Mapping) -> torch.Tensor:
    """``S = sum_m alpha_m S_m``: the modalities' item graphs summed with their weights.

    Weights may be numbers or 0-d tensors; gradients reach tensor weights and the graphs' values
    (LATTICE learns both).

    Args:
        graphs: ``{modality: [n, n] sparse graph}``.
        weights: ``{modality: alpha_m}``, one per graph.

    Shapes:
        each graph ``[n, n]``; returns ``[n, n]`` sparse.
    """
    if not graphs:
        raise ValueError("weighted_graph_sum needs at least one graph")
    if set(graphs) != set(weights):
        raise ValueError(f"weights for {sorted(weights)} but graphs for {sorted(graphs)}")
    parts = [graph.coalesce() for graph in graphs.values()]
    indices = torch.cat([graph.indices() for graph in parts], dim=1)
    values = torch.cat([graph.values() * weights[name] for name, graph in zip(graphs, parts)])
    return torch.sparse_coo_tensor(
        indices, values, parts[0].shape, check_invariants=False
    ).coalesce()  # the indices come from valid graphs
