"""Degree-sensitive edge pruning of the user-item graph (FREEDOM's denoising).

Reference:
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." ACM MM 2023, Sec. "Denoising User-Item Graph".

An edge ``(u, i)`` is kept with a weight ``p_ui = 1 / (sqrt(|N_u|) sqrt(|N_i|))``: edges between
two high-degree nodes, the likeliest noise, are the likeliest to go. A share of the edges is drawn
without replacement under these weights, and the kept graph is normalised again
(``D^-1/2 A D^-1/2`` on its own degrees) by :func:`recbole_mm.model.layers.graph.normalized_adjacency`.
"""

from __future__ import annotations

import torch

from recbole_mm.data.adjacency import normalized_adjacency


def degree_sensitive_weights(
    users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int
) -> torch.Tensor:
    """``p_ui = 1 / sqrt(|N_u| |N_i|)`` for each edge (the degrees of the given edge list).

    Shapes:
        users, items: ``[E]`` unique pairs; returns ``[E]``.
    """
    user_degree = torch.bincount(users, minlength=n_users).float()
    item_degree = torch.bincount(items, minlength=n_items).float()
    return (user_degree[users] * item_degree[items]).rsqrt()


def weighted_sample_without_replacement(
    weights: torch.Tensor, n: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``n`` draws without replacement, each draw proportional to ``weights`` among
    the indices not drawn yet (what ``torch.multinomial(weights, n)`` samples, without its
    limit of 2^24 categories): the ``n`` largest keys ``log(U) / w`` (Efraimidis and Spirakis,
    "Weighted random sampling with a reservoir", IPL 2006).

    Shapes:
        weights: ``[E]`` positive; returns ``[n]`` indices.
    """
    uniform = torch.rand(weights.shape, device=weights.device, generator=generator)
    keys = uniform.clamp(min=torch.finfo(uniform.dtype).tiny).log() / weights
    return keys.topk(n).indices


def degree_sensitive_prune(
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    n_users: int,
    n_items: int,
    prune_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The normalised adjacency of a degree-sensitively pruned user-item graph.

    Keeps ``int(E * (1 - prune_ratio))`` of the ``E`` unique edges, drawn with
    :func:`weighted_sample_without_replacement` under :func:`degree_sensitive_weights`, and
    normalises the kept graph on its own degrees.

    Args:
        users, items: the training interactions (repeated pairs count once).
        n_users, n_items: node counts, padding ids included.
        prune_ratio: share of the edges dropped, in ``[0, 1)``; 0 keeps the whole graph.
        generator: random source (default: torch's global one, seeded by RecBole).

    Shapes:
        users, items: ``[E]``; returns ``[n_users + n_items, n_users + n_items]`` sparse.
    """
    if not 0 <= prune_ratio < 1:
        raise ValueError(f"edge_prune_ratio = {prune_ratio} must be in [0, 1)")
    pairs = torch.unique(torch.stack([users.long(), items.long()]), dim=1)  # [2, E]
    n_keep = int(pairs.shape[1] * (1.0 - prune_ratio))
    if n_keep < pairs.shape[1]:
        weights = degree_sensitive_weights(pairs[0], pairs[1], n_users=n_users, n_items=n_items)
        pairs = pairs[:, weighted_sample_without_replacement(weights, n_keep, generator=generator)]
    return normalized_adjacency(pairs[0], pairs[1], n_users=n_users, n_items=n_items)
