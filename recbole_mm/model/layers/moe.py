"""Mixture of linear experts whose gate reads an external guide vector (IMECD's ID-MoE).

The experts transform one input (e.g. an item's projected text feature); the gate is a softmax
over a *different* vector (the item's ID embedding), so that the mixture a modality gets is
chosen by what the item's interactions say about it rather than by the content itself.

Reference: IMECD, Eq. 3-6 (one instance per content modality).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GuidedMixtureOfExperts(nn.Module):
    r"""``y = sum_n g_n (W_n x + b_n)`` with ``g = softmax(W_g u + b_g)``.

    Args:
        dim: size of the input ``x`` and of the output ``y`` (the experts are ``dim x dim``).
        guide_dim: size of the guide vector ``u`` that drives the gate.
        n_experts: number of experts ``N``.

    Shapes:
        x: ``[*, dim]``, guide: ``[*, guide_dim]`` (same leading shape) -> ``[*, dim]``;
        :meth:`gate` returns ``[*, n_experts]``.
    """

    def __init__(self, *, dim: int, guide_dim: int, n_experts: int):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts = {n_experts} must be at least 1.")
        if dim < 1 or guide_dim < 1:
            raise ValueError(f"dim = {dim} and guide_dim = {guide_dim} must be positive.")
        self.n_experts = n_experts
        self.gate_proj = nn.Linear(guide_dim, n_experts)  # W_1 / W_2, b_1 / b_2 of Eq. 3-4
        bound = 1.0 / math.sqrt(dim)
        # W_n, b_n of Eq. 5-6, stacked so that all experts run as one batched product.
        self.expert_weight = nn.Parameter(torch.empty(n_experts, dim, dim).uniform_(-bound, bound))
        self.expert_bias = nn.Parameter(torch.empty(n_experts, dim).uniform_(-bound, bound))

    def gate(self, guide: Tensor) -> Tensor:
        """Eq. 3-4: routing weights over the experts, ``[*, n_experts]``, rows sum to 1."""
        return torch.softmax(self.gate_proj(guide), dim=-1)

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        if x.shape[:-1] != guide.shape[:-1]:
            raise ValueError(
                f"x {tuple(x.shape)} and guide {tuple(guide.shape)} need the same leading shape."
            )
        g = self.gate(guide)  # [*, N]
        # Eq. 5-6: the gate-weighted sum of the experts' outputs, accumulated one expert at a
        # time so that memory stays [*, dim] (all items of a large catalogue go through here).
        out = g @ self.expert_bias  # [*, dim]: sum_n g_n b_n
        for n in range(self.n_experts):
            out = out + g[..., n : n + 1] * (x @ self.expert_weight[n].T)
        return out
