"""LGMRec: local embeddings (LightGCN on IDs, plus each modality's features propagated over the
user-item graph) fused with global embeddings from a learned hypergraph per modality, trained
with BPR, a contrastive loss between the modalities' hypergraph embeddings and L2.

Reference:
    Zhiqiang Guo, Jianjun Li, Guohui Li, Chaoyang Wang, Si Shi and Bin Ruan. "LGMRec: Local and
    Global Graph Learning for Multimodal Recommendation." AAAI 2024 (arXiv:2312.16400). Official
    code: georgeguo-cn/LGMRec (models/lgmrec.py, the released logs) and its copy in MMRec
    (enoche/MMRec, src/models/lgmrec.py, src/configs/model/LGMRec.yaml).

Equations are named after the paper's modules, as in docs/models/LGMRec.md: (C) collaborative
graph embedding; (M1)-(M3) modality graph embedding; (L) local embedding; (H1)-(H3) global
hypergraph embedding (recbole_mm/model/layers/hypergraph.py); (G) global embedding; (F) fusion;
(L_bpr), (L_hcl), (L_reg) the loss.

Deviations:
    - Modalities are roles (``modality_roles``, default: every modality of the dataset), any number
      of them; the paper has image and text. The contrastive term sums over the ordered pairs
      (earlier role as anchor, later role's embeddings as candidates), one pair for two roles as
      in the paper; with one role it is 0.
    - Evaluation uses the noise-free assignment ``softmax(h / tau)`` and no hyperedge dropout; the
      code draws Gumbel noise at evaluation too, which makes its rankings random. Training is as
      in the code.
    - The authors' repository overwrites the visual user assignment with the textual one and
      leaves the textual one un-normalised (a typo, fixed in MMRec's copy); we follow MMRec's copy
      and the paper.
    - RecBole's padding user and item are not candidates of the contrastive term.
    - ``feat_embed_dim`` of the code is ``embedding_size`` here: the modality and ID embeddings
      are added, so the code needs them equal too.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, whole
from recbole_mm.model.layers.contrastive import info_nce_loss
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.hypergraph import (
    HypergraphPropagation,
    hyperedge_assignment,
    user_hyperedge_logits,
)

logger = logging.getLogger(__name__)


class LGMRec(MultimodalGeneralRecommender):
    """Local (collaborative + modality graph) embeddings + alpha x global hypergraph embeddings."""

    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "n_modality_layers": whole(0),
        "n_hyper_layers": whole(1),
        "n_hyperedges": whole(1),
        "hyperedge_keep_rate": number(0, 1, low_open=True),
        "global_weight": number(0),
        "cl_weight": number(0),
        "reg_weight": number(0),
        "gumbel_tau": number(0, low_open=True),
        "cl_temperature": number(0, low_open=True),
    }

    input_type = InputType.PAIRWISE
    requires_content = True
    adjacency_norm = "symmetric"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_modality_layers = config["n_modality_layers"]
        self.n_hyper_layers = config["n_hyper_layers"]
        self.n_hyperedges = config["n_hyperedges"]
        self.keep_rate = config["hyperedge_keep_rate"]
        self.global_weight = config["global_weight"]
        self.cl_weight = config["cl_weight"]
        self.reg_weight = config["reg_weight"]
        self.gumbel_tau = config["gumbel_tau"]
        self.cl_temperature = config["cl_temperature"]
        self.roles = list(self.features)
        if len(self.roles) == 1:
            logger.warning(
                "LGMRec with the one content role %s has no contrastive term (it contrasts "
                "modalities); map two or more with modality_roles to use it.",
                self.roles,
            )

        # the training interactions R (H1) and their row means (M2), users' item averages
        users, items = dataset.interaction_pairs()
        pairs = torch.unique(torch.stack([users.long(), items.long()]), dim=1)  # [2, E]
        shape = (self.n_users, self.n_items)
        degree = torch.bincount(pairs[0], minlength=self.n_users).float()
        ones = torch.ones(pairs.shape[1])
        interactions = torch.sparse_coo_tensor(pairs, ones, shape, check_invariants=True).coalesce()
        item_mean = torch.sparse_coo_tensor(
            pairs, 1.0 / degree[pairs[0]], shape, check_invariants=True
        ).coalesce()
        self.register_buffer("interactions", interactions, persistent=False)
        self.register_buffer("item_mean", item_mean, persistent=False)

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.propagation = LightGCNPropagation(n_layers=self.n_layers)
        # (M1): x_i^m W_m; (H1): the hyperedge embeddings V^m, [A, d_m] per modality
        self.projections = nn.ModuleDict(
            {
                role: nn.Linear(self.features[role].shape[1], self.embedding_size, bias=False)
                for role in self.roles
            }
        )
        self.hyperedges = nn.ParameterDict(
            {
                role: nn.Parameter(torch.empty(self.n_hyperedges, self.features[role].shape[1]))
                for role in self.roles
            }
        )
        self.hypergraph = HypergraphPropagation(n_layers=self.n_hyper_layers)
        self.hyperedge_dropout = nn.Dropout(p=1.0 - self.keep_rate)
        self.bpr_loss = BPRLoss()
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

        # parameters initialization: Xavier uniform everywhere, as the official code
        for weight in (self.user_embedding.weight, self.item_embedding.weight):
            nn.init.xavier_uniform_(weight)
        for projection in self.projections.values():
            nn.init.xavier_uniform_(projection.weight)
        for hyperedges in self.hyperedges.values():
            nn.init.xavier_uniform_(hyperedges)

    def train(self, mode: bool = True):
        self._eval_cache = None  # evaluation representations recomputed from the new weights
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- parts ----------------------------------------------------------------------------
    def modality_graph_embedding(self, role: str) -> torch.Tensor:
        """(M1)-(M3): ``[n_users + n_items, d]``, the modality's features on the user-item graph."""
        items = self.projections[role](self.features[role])  # (M1): [n_items, d]
        users = torch.sparse.mm(self.item_mean, items)  # (M2): mean of the user's items
        nodes = torch.cat([users, items])  # [N, d]
        for _ in range(self.n_modality_layers):  # (M3): the last layer of L_m propagations
            nodes = torch.sparse.mm(self.adjacency, nodes)
        return nodes

    def hyperedge_assignments(self, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(H1)-(H2): ``(items [n_items, A], users [n_users, A])``, rows distributions; Gumbel
        noise in training only."""
        item_logits = self.features[role] @ self.hyperedges[role].T  # (H1): H_i = X^m V^m^T
        user_logits = user_hyperedge_logits(self.interactions, item_logits)  # (H1): H_u = R H_i
        return tuple(
            hyperedge_assignment(logits, temperature=self.gumbel_tau, gumbel=self.training)
            for logits in (item_logits, user_logits)
        )

    # -- forward --------------------------------------------------------------------------
    def forward(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(users [n_users, d], items [n_items, d], {role: (users, items)})``: the fused
        representations and each modality's global (hypergraph) embeddings."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # [N, d]
        collaborative = self.propagation(self.adjacency, ego)  # (C): LightGCN layer mean
        local = collaborative
        for role in self.roles:  # (L): E_c + sum_m normalize(E_m)
            local = local + F.normalize(self.modality_graph_embedding(role), dim=-1)
        collaborative_items = collaborative[self.n_users :]  # [n_items, d]
        global_views, global_sum = {}, 0.0
        for role in self.roles:
            items_h, users_h = self.hyperedge_assignments(role)
            # (H3): propagation of the collaborative item embeddings through the kept hyperedges
            users_g, items_g = self.hypergraph(
                self.hyperedge_dropout(items_h),
                self.hyperedge_dropout(users_h),
                collaborative_items,
            )
            global_views[role] = (users_g, items_g)
            global_sum = global_sum + torch.cat([users_g, items_g])  # (G): sum over modalities
        fused = local + self.global_weight * F.normalize(global_sum, dim=-1)  # (F)
        users, items = torch.split(fused, [self.n_users, self.n_items])
        return users, items, global_views

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        users, items, views = self.forward()
        u, pos, neg = users[user], items[pos_item], items[neg_item]  # [B, d]
        bpr = self.bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))  # (L_bpr)
        hcl = u.new_zeros(())
        for a, first in enumerate(self.roles):  # (L_hcl): users and positive items
            for second in self.roles[a + 1 :]:
                (users_a, items_a), (users_b, items_b) = views[first], views[second]
                # InfoNCE against every user (item) of the other modality, summed over the batch
                for rows, (view_a, view_b) in (
                    (user, (users_a, users_b)),
                    (pos_item, (items_a, items_b)),
                ):
                    hcl = hcl + info_nce_loss(
                        view_a[rows],
                        view_b[rows],
                        candidates=view_b[1:],
                        temperature=self.cl_temperature,
                        reduction="sum",
                    )
        # (L_reg): the official code's norms (not squared) of the batch's final embeddings / B
        reg = (u.norm() + pos.norm() + neg.norm()) / neg.shape[0]
        return bpr + self.cl_weight * hcl + self.reg_weight * reg

    def _eval_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            return self.forward()[:2]
        if self._eval_cache is None:
            with torch.no_grad():
                self._eval_cache = self.forward()[:2]
        return self._eval_cache

    def predict(self, interaction):
        users, items = self._eval_representations()
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return (users[user] * items[item]).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        users, items = self._eval_representations()
        return users[interaction[self.USER_ID]] @ items.T  # [B, n_items]
