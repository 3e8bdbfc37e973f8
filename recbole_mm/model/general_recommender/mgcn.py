"""MGCN: content purified by the item ID embeddings, propagated on frozen per-modality item kNN
graphs (item-item view) apart from LightGCN on the IDs (user-item view), fused by a
behaviour-aware attention and tied to the behaviour view by a contrastive task.

Reference:
    Penghang Yu, Zhiyi Tan, Guanming Lu and Bing-Kun Bao. "Multi-View Graph Convolutional Network
    for Multimedia Recommendation." ACM MM 2023 (arXiv:2308.03588). Official code: demonph10/MGCN
    (src/models/mgcn.py, src/configs/model/MGCN.yaml); MMRec's copy (enoche/MMRec,
    models/mgcn.py, configs/model/MGCN.yaml).

Equations are named after the paper's parts: (P1)-(P2) the behaviour-guided purifier, (U) the
user-item view, (I1)-(I3) the item-item view and its lift to users, (F1)-(F4) the behaviour-aware
fuser (:class:`~recbole_mm.model.layers.fusion.BehaviourAwareFusion`), (F5) the final
representations, (S) the self-supervised task, (L) the loss. docs/models/MGCN.md maps each to
the code.

Deviations:
    - Modalities are roles (``modality_roles``, default: every modality of the dataset); the paper
      has image and text. The fuser takes any number ``M >= 1`` and averages over ``M + 1``
      parts (the code's ``/ 3`` for two).
    - The attention's softmax is over the modalities of each node, as the paper and MMRec's copy
      have it; the authors' repository takes it over the nodes (``nn.Softmax(dim=0)``).
    - Raw features stay fixed; the code also trains them (``nn.Embedding(..., freeze=False)``).
      The kNN graphs come from the features as loaded in both, built once and frozen.
    - No learning-rate decay (the code multiplies it by 0.96 every 50 epochs); RecBole's Xavier
      normal initialisation everywhere (the code: Xavier uniform for the IDs, PyTorch's default
      for the linear layers); the L2 term divides by the batch's rows, the code by the nominal
      ``train_batch_size``.
"""

from __future__ import annotations

import torch
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.data.adjacency import user_item_block
from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, whole
from recbole_mm.model.layers.contrastive import info_nce_loss
from recbole_mm.model.layers.fusion import BehaviourAwareFusion
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.knn_graph import knn_item_graph


class BehaviourGuidedPurifier(nn.Module):
    """(P1) ``x' = W_1 x + b_1``; (P2) ``e^m = e^id * sigmoid(W_2 x' + b_2)``: the item ID
    embedding, element-wise, keeps what the modality's projected features let through.

    Shapes:
        item_ids: ``[n_items, d]``; features: ``[n_items, d_m]``; returns ``[n_items, d]``.
    """

    def __init__(self, *, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(feature_dim, dim)  # (P1)
        self.gate = nn.Linear(dim, dim)  # (P2)

    def forward(self, item_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return item_ids * torch.sigmoid(self.gate(self.projection(features)))  # (P1)-(P2)


class MGCN(MultimodalGeneralRecommender):
    """Users and items: the behaviour view (LightGCN on IDs) + the fused modality views."""

    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "n_mm_layers": whole(0),
        "knn_k": whole(1),
        "cl_weight": number(0),
        "cl_temperature": number(0, low_open=True),
        "reg_weight": number(0),
    }

    input_type = InputType.PAIRWISE
    requires_content = True
    adjacency_norm = "symmetric"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.knn_k = config["knn_k"]
        self.cl_weight = config["cl_weight"]
        self.cl_temperature = config["cl_temperature"]
        self.reg_weight = config["reg_weight"]

        # (I1): one kNN graph per modality from the features as loaded, frozen
        self.roles = list(self.features)
        for i, role in enumerate(self.roles):
            graph = knn_item_graph(self.features[role], k=self.knn_k)
            self.register_buffer(f"item_graph_{i}", graph, persistent=False)
        # (I3): the user rows of the normalised user-item graph, to lift item views to users
        block = user_item_block(self.adjacency, n_users=self.n_users)
        self.register_buffer("user_item_graph", block, persistent=False)

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.propagation = LightGCNPropagation(n_layers=self.n_layers)  # (U)
        self.purifiers = nn.ModuleDict(
            {
                role: BehaviourGuidedPurifier(
                    feature_dim=self.features[role].shape[1], dim=self.embedding_size
                )
                for role in self.roles
            }
        )
        self.fusion = BehaviourAwareFusion(dim=self.embedding_size, n_modalities=len(self.roles))
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def item_graph(self, role: str) -> torch.Tensor:
        """The frozen kNN graph of ``role`` (I1), ``[n_items, n_items]`` sparse."""
        return getattr(self, f"item_graph_{self.roles.index(role)}")

    def train(self, mode: bool = True):
        self._eval_cache = None  # evaluation recomputes from the current weights
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- forward --------------------------------------------------------------------------
    def modality_view(self, role: str) -> torch.Tensor:
        """One modality's view of users and items, ``[n_users + n_items, d]``."""
        items = self.purifiers[role](self.item_embedding.weight, self.features[role])  # (P)
        graph = self.item_graph(role)
        for _ in range(self.n_mm_layers):  # (I2): e^m <- S_m e^m, L_ii times
            items = torch.sparse.mm(graph, items)
        users = torch.sparse.mm(self.user_item_graph, items)  # (I3): sum_i e_i / sqrt(|N_u||N_i|)
        return torch.cat([users, items])

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(behaviour, fused)``, each ``[n_users + n_items, d]`` (users first): the user-item
        view and the fused modality views; the final representations are their sum (F5)."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # [N, d]
        behaviour = self.propagation(self.adjacency, ego)  # (U): LightGCN layer mean
        views = [self.modality_view(role) for role in self.roles]
        fused, _ = self.fusion(behaviour, views)  # (F1)-(F4)
        return behaviour, fused

    def _split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = torch.split(nodes, [self.n_users, self.n_items])
        return users, items

    def loss_parts(self, interaction) -> dict[str, torch.Tensor]:
        """``{"bpr", "reg", "cl"}``, unweighted; :meth:`calculate_loss` weighs and sums them."""
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        behaviour, fused = self.forward()
        users, items = self._split(behaviour + fused)  # (F5)
        u, pos, neg = users[user], items[pos_item], items[neg_item]
        bpr = self.bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))  # (L)
        reg = self.reg_loss(u, pos, neg, require_pow=True).squeeze(0)  # (L): 1/2 sum sq / B
        behaviour_users, behaviour_items = self._split(behaviour)
        fused_users, fused_items = self._split(fused)
        cl = info_nce_loss(  # (S): items of the batch, then its users
            fused_items[pos_item], behaviour_items[pos_item], temperature=self.cl_temperature
        ) + info_nce_loss(fused_users[user], behaviour_users[user], temperature=self.cl_temperature)
        return {"bpr": bpr, "reg": reg, "cl": cl}

    def calculate_loss(self, interaction):
        parts = self.loss_parts(interaction)
        # (L): L_BPR + lambda_C L_C + lambda_E ||E||^2
        return parts["bpr"] + self.reg_weight * parts["reg"] + self.cl_weight * parts["cl"]

    def _eval_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._eval_cache is None or self.training:
            with torch.no_grad():
                behaviour, fused = self.forward()
                cache = self._split(behaviour + fused)
            if self.training:
                return cache
            self._eval_cache = cache
        return self._eval_cache

    def predict(self, interaction):
        users, items = self._eval_representations()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction):
        users, items = self._eval_representations()
        return users[interaction[self.USER_ID]] @ items.T  # [B, n_items]
