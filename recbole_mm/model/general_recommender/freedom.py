"""FREEDOM: a frozen item-item kNN graph from content and a degree-sensitively pruned
user-item graph, both convolved, trained with BPR plus a BPR loss on each modality.

Reference:
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." ACM MM 2023 (arXiv:2211.06924). Official code: the FREEDOM
    model of MMRec (enoche/MMRec, models/freedom.py, configs/model/FREEDOM.yaml).

Equations are named after the paper's sections: (I1)-(I4) the frozen item-item graph (cosine
similarity, kNN sparsification, normalisation, weighted sum over modalities); (D) the
degree-sensitive edge pruning; (C1) the item-item convolution, (C2) LightGCN on the pruned graph,
(C3) the final representations; (L) the loss. docs/models/FREEDOM.md maps each to the code.

Deviations:
    - Modalities are roles (``modality_roles``, default: every modality of the dataset). The paper
      has an image and a text graph weighted ``alpha_v`` and ``1 - alpha_v``; here the visual role
      (the role named ``visual``/``image``, or whose modality the dataset tags ``role: visual``)
      gets ``mm_image_weight`` and the other roles share ``1 - mm_image_weight`` equally; with one
      role, or without a visual role, the roles share the weight equally.
    - The raw features are fixed; the official code also trains them (each modality's matrix is
      an ``nn.Embedding(..., freeze=False)`` that the modality BPR loss updates). The kNN graph
      is built from the features as loaded in both.
    - The pruned graph is redrawn once per training epoch, as in the official code; RecBole
      calls ``model.train()`` at the start of every epoch, which asks for a new draw.
    - The draw is weighted sampling without replacement (Efraimidis-Spirakis keys), the same
      distribution as the code's ``torch.multinomial`` without its limit of 2^24 edges.
    - No L2 term: the official code has none (MMRec's ``weight_decay`` is 0, and its key
      ``reg_weight`` weights the modality BPR loss, here ``modal_bpr_weight``). RecBole's
      ``weight_decay`` adds one if wanted.
"""

from __future__ import annotations

import torch
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.data.modalities import USUAL_NAMES, role_tags
from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, whole
from recbole_mm.model.layers.edge_pruning import degree_sensitive_prune
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.knn_graph import knn_item_graph, weighted_graph_sum


def modality_graph_weights(roles, *, visual: str | None, image_weight: float) -> dict:
    """``{role: alpha_m}`` of (I4): ``visual`` gets ``image_weight``, the others share the rest;
    equal shares with one role or without a visual role."""
    roles = list(roles)
    if visual is None or len(roles) == 1:
        return {role: 1.0 / len(roles) for role in roles}
    others = (1.0 - image_weight) / (len(roles) - 1)
    return {role: image_weight if role == visual else others for role in roles}


class FREEDOM(MultimodalGeneralRecommender):
    """Users: LightGCN on the pruned graph; items: LightGCN + the frozen item graph's output."""

    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "n_mm_layers": whole(0),
        "knn_k": whole(1),
        "mm_image_weight": number(0, 1),
        "edge_prune_ratio": number(0, 1, high_open=True),
        "modal_bpr_weight": number(0),
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
        self.image_weight = config["mm_image_weight"]
        self.prune_ratio = config["edge_prune_ratio"]
        self.modal_bpr_weight = config["modal_bpr_weight"]

        # the frozen item-item graph (I1)-(I4), built once from the features as loaded
        tags = role_tags(config["modalities"])
        visual = next(
            (
                role
                for role, modality in self.modality_roles.items()
                if tags.get(modality) == "visual" or role in USUAL_NAMES["visual"]
            ),
            None,
        )
        self.graph_weights = modality_graph_weights(
            self.features, visual=visual, image_weight=self.image_weight
        )
        graphs = {role: knn_item_graph(self.features[role], k=self.knn_k) for role in self.features}
        item_graph = weighted_graph_sum(graphs, self.graph_weights)
        self.register_buffer("item_graph", item_graph, persistent=False)
        users, items = dataset.interaction_pairs()
        self.register_buffer("edges", torch.stack([users, items]).long(), persistent=False)

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.propagation = LightGCNPropagation(n_layers=self.n_layers)
        # (L): each modality's features projected to the embedding space, x_m W_m + b_m
        self.projections = nn.ModuleDict(
            {
                role: nn.Linear(self.features[role].shape[1], self.embedding_size)
                for role in self.features
            }
        )
        self.bpr_loss = BPRLoss()
        self._pruned_adjacency: torch.Tensor | None = None
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

        # parameters initialization
        self.apply(xavier_normal_initialization)

    # -- graphs ---------------------------------------------------------------------------
    def pruned_adjacency(self) -> torch.Tensor:
        """(D): this epoch's pruned, renormalised user-item graph (drawn on first use)."""
        if self._pruned_adjacency is None:
            if self.prune_ratio == 0:
                self._pruned_adjacency = self.adjacency
            else:
                self._pruned_adjacency = degree_sensitive_prune(
                    self.edges[0],
                    self.edges[1],
                    n_users=self.n_users,
                    n_items=self.n_items,
                    prune_ratio=self.prune_ratio,
                )
        return self._pruned_adjacency

    def train(self, mode: bool = True):
        # RecBole calls train() at the start of every epoch: a new pruned graph for the epoch,
        # and evaluation representations recomputed from the current weights.
        self._pruned_adjacency = None
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- forward --------------------------------------------------------------------------
    def forward(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users [n_users, d], items [n_items, d])`` on the user-item graph ``adjacency``."""
        item_side = self.item_embedding.weight
        for _ in range(self.n_mm_layers):  # (C1): h_i = sum_j S_ij h_j, L_ii times
            item_side = torch.sparse.mm(self.item_graph, item_side)
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # [N, d]
        nodes = self.propagation(adjacency, ego)  # (C2): LightGCN layer mean
        users, items = torch.split(nodes, [self.n_users, self.n_items])
        return users, items + item_side  # (C3): h_u = e_u, h_i = e_i + h_i^(L_ii)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.pruned_adjacency())
        u = users[user]  # [B, d]
        # (L): BPR on the final representations ...
        loss = self.bpr_loss((u * items[pos_item]).sum(-1), (u * items[neg_item]).sum(-1))
        # ... plus lambda x a BPR loss of the user against each modality's projected features
        modal = 0.0
        for role, projection in self.projections.items():
            content = projection(self.features[role])  # [n_items, d]
            modal = modal + self.bpr_loss(
                (u * content[pos_item]).sum(-1), (u * content[neg_item]).sum(-1)
            )
        return loss + self.modal_bpr_weight * modal

    def _eval_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Evaluation uses the whole (unpruned) graph, as the official code does.
        if self.training:
            return self.forward(self.adjacency)
        if self._eval_cache is None:
            with torch.no_grad():
                self._eval_cache = self.forward(self.adjacency)
        return self._eval_cache

    def predict(self, interaction):
        users, items = self._eval_representations()
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return (users[user] * items[item]).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        users, items = self._eval_representations()
        return users[interaction[self.USER_ID]] @ items.T  # [B, n_items]
