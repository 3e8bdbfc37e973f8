"""Attention fusion of content modalities: CEMG's collaborative-guided fusion (Sec. 3.2,
Eq. 2-3) and MGCN's behaviour-aware fuser (Sec. 3.4).

References:
    Lin et al. "CEMG: Collaborative-Enhanced Multimodal Generative Recommendation." (Eq. 2-3)
    Penghang Yu, Zhiyi Tan, Guanming Lu and Bing-Kun Bao. "Multi-View Graph Convolutional
    Network for Multimedia Recommendation." ACM MM 2023 (arXiv:2308.03588), the behaviour-aware
    fuser; docs/models/MGCN.md names its steps (F1)-(F4).
"""

from __future__ import annotations

import torch
from torch import nn


class CollaborativeGuidedFusion(nn.Module):
    """Attention over content modalities with the collaborative embedding as the query.

    Eq. 2: ``alpha_m = softmax_m((W_q e^c)^T (W_k e^m))`` over the modalities ``m``;
    Eq. 3: ``x = [sum_m alpha_m e^m ; e^c]`` (weighted sum, then concatenation).

    The paper fuses exactly two modalities (visual, textual); any number >= 1 works here. With
    ``guide=None`` (the "w/o Collab" ablation) there is no query: the weights are uniform and
    ``x`` is the plain mean of the modalities, without the collaborative half.

    Args:
        dim: width ``d`` of every input embedding.

    Shapes:
        guide: ``[N, d]`` or None; modalities: a sequence of ``[N, d]``;
        returns ``(x [N, 2d] ([N, d] without guide), alpha [N, n_modalities])``.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(dim, dim, bias=False)  # W_q
        self.key = nn.Linear(dim, dim, bias=False)  # W_k

    def forward(
        self, guide: torch.Tensor | None, modalities: list[torch.Tensor] | tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not modalities:
            raise ValueError("CollaborativeGuidedFusion needs at least one modality")
        content = torch.stack(list(modalities), dim=1)  # [N, M, d]
        if content.shape[-1] != self.dim:
            raise ValueError(f"modality width {content.shape[-1]} != fusion dim {self.dim}")
        if guide is None:
            alpha = content.new_full(content.shape[:2], 1.0 / content.shape[1])  # [N, M]
        else:
            q = self.query(guide)  # [N, d]
            k = self.key(content)  # [N, M, d]
            alpha = torch.einsum("nd,nmd->nm", q, k).softmax(dim=-1)  # Eq. 2
        fused = (alpha.unsqueeze(-1) * content).sum(1)  # [N, d], the element-wise sum of Eq. 3
        if guide is None:
            return fused, alpha
        return torch.cat([fused, guide], dim=-1), alpha  # Eq. 3: [N, 2d]


class BehaviourAwareFusion(nn.Module):
    """MGCN's behaviour-aware fuser: a shared part of the modality views by attention, the
    modality-specific remainders gated by the behaviour features, averaged.

    (F1) ``alpha_m = softmax_m(q^T tanh(W e^m + b))``, one attention network for all modalities,
         the softmax taken over the modalities of each node;
    (F2) ``e^s = sum_m alpha_m e^m`` (shared), ``e~^m = e^m - e^s`` (specific);
    (F3) ``p^m = sigmoid(W_m e^id + b_m)``, each modality's preference gate from the behaviour
         (ID) features;
    (F4) ``e^mul = (e^s + sum_m p^m * e~^m) / (M + 1)``.

    The paper fuses two modalities (image, text), and the authors' code divides by 3; any
    number ``M >= 1`` works here, divided by ``M + 1``.

    Args:
        dim: width ``d`` of the views and of the behaviour features.
        n_modalities: ``M``, one preference gate each.

    Shapes:
        behaviour: ``[N, d]``; views: a sequence of ``M`` tensors ``[N, d]``;
        returns ``(e^mul [N, d], alpha [N, M])``.
    """

    def __init__(self, *, dim: int, n_modalities: int) -> None:
        super().__init__()
        if n_modalities < 1:
            raise ValueError(f"BehaviourAwareFusion needs n_modalities >= 1, got {n_modalities}")
        self.dim = dim
        self.attention = nn.Sequential(  # (F1): q^T tanh(W e + b)
            nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False)
        )
        self.preferences = nn.ModuleList(  # (F3): one gate per modality
            nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid()) for _ in range(n_modalities)
        )

    def forward(
        self, behaviour: torch.Tensor, views: list[torch.Tensor] | tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(views) != len(self.preferences):
            raise ValueError(f"got {len(views)} views for {len(self.preferences)} modalities")
        stacked = torch.stack(list(views), dim=1)  # [N, M, d]
        if stacked.shape[-1] != self.dim or behaviour.shape != stacked[:, 0].shape:
            raise ValueError(
                f"views {tuple(stacked.shape)} and behaviour {tuple(behaviour.shape)} must be "
                f"[N, {self.dim}]"
            )
        alpha = self.attention(stacked).squeeze(-1).softmax(dim=-1)  # (F1): [N, M]
        shared = (alpha.unsqueeze(-1) * stacked).sum(1)  # (F2): [N, d]
        specific = stacked - shared.unsqueeze(1)  # (F2): [N, M, d]
        gates = torch.stack([gate(behaviour) for gate in self.preferences], dim=1)  # (F3)
        fused = (shared + (gates * specific).sum(1)) / (len(self.preferences) + 1)  # (F4)
        return fused, alpha
