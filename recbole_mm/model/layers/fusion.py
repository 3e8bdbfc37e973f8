"""Collaborative-guided attention fusion of content modalities (CEMG, Sec. 3.2, Eq. 2-3).

Reference:
    Lin et al. "CEMG: Collaborative-Enhanced Multimodal Generative Recommendation." (Eq. 2-3)
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
