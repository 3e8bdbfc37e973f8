"""Learned hypergraphs over users and items: soft hyperedge assignments and their propagation.

Reference:
    Zhiqiang Guo et al. "LGMRec: Local and Global Graph Learning for Multimodal Recommendation."
    AAAI 2024 (arXiv:2312.16400), the global hypergraph embedding module. The equations are named
    after that module's parts, as in docs/models/LGMRec.md: (H1) item-hyperedge and user-hyperedge
    dependencies, (H2) their Gumbel-softmax relaxation, (H3) hypergraph message passing.

A hypergraph of ``A`` hyperedges is held as two dense, row-stochastic assignment matrices: items
to hyperedges ``H_i`` ``[n_items, A]`` and users to hyperedges ``H_u`` ``[n_users, A]``. ``A`` is
small (a few to a few hundred), so the dense form costs ``O(n A)`` memory; only the user-item
interactions that derive ``H_u`` from ``H_i`` are sparse.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def user_hyperedge_logits(interactions: Tensor, item_logits: Tensor) -> Tensor:
    """(H1) ``H_u = R H_i``: a user's hyperedge logits are the sum of its items' logits.

    Args:
        interactions: the user-item matrix ``R`` (sparse or dense), 1 where the user interacted.
        item_logits: the item-hyperedge logits ``H_i``.

    Shapes:
        interactions: ``[n_users, n_items]``; item_logits: ``[n_items, A]``; returns
        ``[n_users, A]``.
    """
    if interactions.shape[1] != item_logits.shape[0]:
        raise ValueError(
            f"interactions {tuple(interactions.shape)} and item_logits "
            f"{tuple(item_logits.shape)} disagree on the number of items"
        )
    if interactions.is_sparse:
        return torch.sparse.mm(interactions, item_logits)
    return interactions @ item_logits


def hyperedge_assignment(
    logits: Tensor, *, temperature: float, gumbel: bool, generator: torch.Generator | None = None
) -> Tensor:
    """(H2) Soft assignment of each row to the hyperedges: ``softmax((h + g) / tau)``.

    With ``gumbel`` the noise ``g = -log(-log U)``, ``U ~ Uniform(0, 1)`` makes the rows
    samples of a Gumbel-softmax (concrete) distribution over hyperedges, differentiable in
    ``h``; without it ``g = 0`` and the rows are the tempered softmax, their deterministic
    counterpart. Each row is a distribution over the ``A`` hyperedges.

    Args:
        logits: unnormalised dependencies ``h``.
        temperature: ``tau > 0``; small values push the rows towards one hyperedge.
        gumbel: add Gumbel noise (training); False for the noise-free assignment.
        generator: optional random generator for the noise.

    Shapes:
        logits: ``[n, A]``; returns ``[n, A]``, rows summing to 1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature} must be > 0")
    if gumbel:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
        uniform = uniform.to(logits.dtype).clamp(min=1e-10, max=1.0 - 1e-7)
        logits = logits - torch.log(-torch.log(uniform))
    return torch.softmax(logits / temperature, dim=-1)


class HypergraphPropagation(nn.Module):
    """(H3) Parameter-free message passing through the hyperedges, items to hyperedges and back.

    Layer ``h``: the hyperedges gather their items, ``Z^h = H_i^T E_i^h`` ``[A, d]``, and give
    back to items and users, ``E_i^(h+1) = H_i Z^h`` and ``E_u^(h+1) = H_u Z^h``. The output is
    the last layer's (no layer average), the users' from the last ``Z``.

    Args:
        n_layers: number of hypergraph layers, ``>= 1``.

    Shapes:
        item_assignment: ``[n_items, A]``; user_assignment: ``[n_users, A]``;
        item_embeddings: ``[n_items, d]``; returns ``(users [n_users, d], items [n_items, d])``.
    """

    def __init__(self, *, n_layers: int) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers = {n_layers} must be >= 1")
        self.n_layers = n_layers

    def forward(
        self, item_assignment: Tensor, user_assignment: Tensor, item_embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        if item_assignment.shape[1] != user_assignment.shape[1]:
            raise ValueError(
                f"item_assignment {tuple(item_assignment.shape)} and user_assignment "
                f"{tuple(user_assignment.shape)} must have the same number of hyperedges"
            )
        items = item_embeddings
        for _ in range(self.n_layers):
            hyperedges = item_assignment.T @ items  # [A, d]: Z^h = H_i^T E_i^h
            items = item_assignment @ hyperedges  # [n_items, d]: E_i^(h+1) = H_i Z^h
        users = user_assignment @ hyperedges  # [n_users, d]: E_u = H_u Z^(last)
        return users, items
