"""VBPR: visual (here: any content modality) Bayesian personalised ranking.

Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback." AAAI 2016.

The classic multimodal baseline of the MMRec literature, and the smallest model that exercises
recbole_mm's multimodal data layer end to end.

Deviations:
    - The paper has one visual feature vector per item; here ``f_i`` is the concatenation of the
      modalities named by ``vbpr_modalities`` (default: every modality the dataset declares),
      as MMRec's VBPR does for image + text.
    - The global offset and the user bias of Eq. 1 are dropped: they cancel in the BPR
      difference x_ui - x_uj and do not change a user's ranking.
"""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn


class VBPR(GeneralRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        modalities = config["vbpr_modalities"] or list(dataset.modalities)
        if not modalities:
            raise ValueError(
                f"VBPR needs at least one content modality, but dataset '{config['dataset']}' "
                f"declares none (key 'modalities' in its YAML)."
            )
        if self.embedding_size <= 0:
            raise ValueError(f"embedding_size = {self.embedding_size} must be positive.")
        # [n_items, F]; not saved with the model: it is data, rebuilt from the dataset.
        features = torch.cat([dataset.modality_features(m) for m in modalities], dim=1)
        self.register_buffer("item_features", features, persistent=False)

        # define layers: Eq. 1 of the paper, x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i)
        # + beta'.f_i
        self.user_gamma = nn.Embedding(self.n_users, self.embedding_size)
        self.user_theta = nn.Embedding(self.n_users, self.embedding_size)
        self.item_gamma = nn.Embedding(self.n_items, self.embedding_size)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.projection = nn.Linear(features.shape[1], self.embedding_size, bias=False)  # E
        self.feature_bias = nn.Linear(features.shape[1], 1, bias=False)  # beta'
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss()

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def forward(self, user, item):
        """Scores ``[B]`` of user-item pairs."""
        user_repr = torch.cat([self.user_gamma(user), self.user_theta(user)], dim=-1)  # [B, 2d]
        item_repr, item_offset = self._items(item)
        return (user_repr * item_repr).sum(-1) + item_offset

    def _items(self, item=None):
        """Item side of Eq. 1 for ``item`` (all items if None): ``([*, 2d] repr, [*] offset)``."""
        if item is None:
            features, gamma, bias = (
                self.item_features,
                self.item_gamma.weight,
                self.item_bias.weight,
            )
        else:
            features, gamma, bias = (
                self.item_features[item],
                self.item_gamma(item),
                self.item_bias(item),
            )
        item_repr = torch.cat([gamma, self.projection(features)], dim=-1)  # [*, 2d]
        return item_repr, (bias + self.feature_bias(features)).squeeze(-1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        pos_score = self.forward(user, pos_item)
        neg_score = self.forward(user, neg_item)
        reg = self.reg_loss(
            self.user_gamma(user),
            self.user_theta(user),
            self.item_gamma(pos_item),
            self.item_gamma(neg_item),
        )
        # RecBole's EmbLoss returns shape [1]; the contract is a scalar loss.
        return self.bpr_loss(pos_score, neg_score) + self.reg_weight * reg.squeeze(0)

    def predict(self, interaction):
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        user_repr = torch.cat([self.user_gamma(user), self.user_theta(user)], dim=-1)  # [B, 2d]
        item_repr, item_offset = self._items()
        return user_repr @ item_repr.T + item_offset  # [B, n_items]
