"""BM3: LightGCN representations trained without negative samples, by bootstrapping a target
view through dropout and aligning the online view (a shared predictor's output) with it.

Reference:
    Xin Zhou, Hongyu Zhou, Yong Liu, Zhiwei Zeng, Chunyan Miao, Pengwei Wang, Yuan You and Feijun
    Jiang. "Bootstrap Latent Representations for Multi-modal Recommendation." WWW 2023
    (arXiv:2207.05969). Official code: the BM3 model of MMRec (enoche/MMRec, models/bm3.py,
    configs/model/BM3.yaml) and enoche/BM3 (best hyper-parameters per dataset in its README).

Equations are named after the paper's parts: (E) the LightGCN encoder and the item residual,
(P) the modality projections, (V) the contrastive view generator (shared predictor = online view,
dropout of the stopped-gradient representation = target view), (C) the negative-cosine criterion,
(L_rec), (L_align), (L_mask) the three objectives, (L) the total loss, (S) the score.
docs/models/BM3.md maps each to the code.

Deviations:
    - Modalities are roles (``modality_roles``, default: every modality of the dataset); the
      paper has image and text, and each role adds its own (L_align) and (L_mask) terms, as the
      code does for both.
    - The raw features are fixed; the official code also trains them (``nn.Embedding(...,
      freeze=False)``), updated through the projections by (L_align) and (L_mask).
    - Initialisation is RecBole's Xavier normal for every embedding and linear layer (the code:
      Xavier uniform for the ID embeddings, Xavier normal for the linear weights, PyTorch's
      default for the biases).
    - The regulariser follows the code: ``reg_weight x (||H_u|| + ||H_i||) / n_items`` over
      *all* online user and item representations (Frobenius norms, not squared; RecBole's
      EmbLoss computes the same), not a per-batch squared L2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, whole
from recbole_mm.model.layers.graph import LightGCNPropagation


def negative_cosine(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(C): ``1 - mean cos(online, sg(target))`` over the rows; the target gets no gradient.

    Shapes:
        online, target: ``[B, d]``; returns a scalar.
    """
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(MultimodalGeneralRecommender):
    """Online view: ``predictor(h)``; target view: ``dropout(sg(h))`` (V). No negatives."""

    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "dropout_prob": number(0, 1, high_open=True),
        "reg_weight": number(0),
        "cl_weight": number(0),
    }

    input_type = InputType.POINTWISE
    adjacency_norm = "symmetric"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.reg_weight = config["reg_weight"]
        self.cl_weight = config["cl_weight"]

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.propagation = LightGCNPropagation(n_layers=self.n_layers)
        # (P): h_m = x_m W_m + b_m, one linear projection per modality
        self.projections = nn.ModuleDict(
            {
                role: nn.Linear(self.features[role].shape[1], self.embedding_size)
                for role in self.features
            }
        )
        # (V): the predictor f_p, shared by the ID and modality representations
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        self.reg_loss = EmbLoss()
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def train(self, mode: bool = True):
        # A training epoch or a new evaluation pass: recompute from the current weights.
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E): ``(h_u [n_users, d], h_i [n_items, d])``: the LightGCN layer mean, plus the item
        ID embedding again on the item side (the code's residual)."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        users, items = torch.split(
            self.propagation(self.adjacency, ego), [self.n_users, self.n_items]
        )
        return users, items + self.item_embedding.weight

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        """(V): the target view, dropout of the stopped-gradient representation."""
        with torch.no_grad():
            return F.dropout(x.detach(), p=self.dropout_prob, training=True)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        item = interaction[self.ITEM_ID]
        users, items = self.forward()
        u_online = self.predictor(users[user])  # [B, d]
        i_online = self.predictor(items[item])
        u_target = self._target(users[user])
        i_target = self._target(items[item])
        # (L_rec): each side's online view predicts the other side's target view
        loss_rec = negative_cosine(u_online, i_target) + negative_cosine(i_online, u_target)
        modal = 0.0
        for role, projection in self.projections.items():
            content = projection(self.features[role][item])  # (P), [B, d]
            m_online = self.predictor(content)
            modal = modal + negative_cosine(m_online, i_target)  # (L_align): modality -> item ID
            modal = modal + negative_cosine(m_online, self._target(content))  # (L_mask)
        # (L): the regulariser on all online representations, as the code (see Deviations)
        reg = self.reg_loss(users, items).squeeze(0)
        return loss_rec + self.reg_weight * reg + self.cl_weight * modal

    def _online(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._eval_cache is None or self.training:
            with torch.no_grad():
                users, items = self.forward()
                cache = (self.predictor(users), self.predictor(items))
            if self.training:
                return cache
            self._eval_cache = cache
        return self._eval_cache

    def predict(self, interaction):
        users, items = self._online()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction):
        users, items = self._online()  # (S): f_p(h_u) . f_p(h_i)
        return users[interaction[self.USER_ID]] @ items.T  # [B, n_items]
