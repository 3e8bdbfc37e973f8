"""VBPR: visual (here: any content modality) Bayesian personalised ranking.

Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback." AAAI 2016.

The classic multimodal baseline of the MMRec literature, and the smallest model that exercises
recbole_mm's multimodal data layer end to end.

Defaults are the paper's method (docs/models/VBPR.md has the table): raw content features,
``x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i) + beta'.f_i`` (Eq. 1), BPR, and L2 on the
latent factors and item biases only.

Deviations:
    - The paper has one visual feature vector per item; here ``f_i`` is the concatenation of the
      roles of ``modality_roles`` (default: every modality the dataset declares), as MMRec's
      VBPR does for image + text.
    - The global offset and the user bias of Eq. 1 are dropped: they cancel in the BPR
      difference x_ui - x_uj and do not change a user's ranking.
    - Regularisation, ``vbpr_regularizer: paper`` (default): ``reg_weight`` x the squared L2
      norms of the batch's ``gamma_u``, ``theta_u``, ``gamma_i``, ``beta_i`` (positive and
      negative items), summed and divided by the batch size: the minibatch form of BPR-Opt's
      ``lambda_Theta ||Theta||^2`` under per-sample SGD. ``E`` and ``beta'`` are not
      regularised, as the authors state for their visually-aware models in TVBPR (WWW 2016: they
      add a constant, small number of parameters); VBPR's own text is not in this checkout.
      ``mmrec`` is the former default, MMRec's convention: RecBole's ``EmbLoss`` (the sum of the
      unsquared Frobenius norms of the batch's embeddings, item biases and projected content
      ``E f_i``, ``beta'.f_i``, divided by 2B, the number of item rows).
    - ``vbpr_feature_norm: standardize`` (an invention, off by default): each column to zero
      mean and unit variance over the items, each modality's block then divided by
      sqrt(its width), so that every modality enters ``E f_i`` and ``beta'.f_i`` with the same
      expected squared norm (1). Raw CNN/audio features have large positive means (TikTok's
      visual rows: norm ~33), which made ``beta'.f_i`` a large, fast-moving item offset.
    - Adam and Xavier initialisation (RecBole's), not the paper's SGD.
"""

from __future__ import annotations

import torch
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, one_of, whole


def standardize_block(features: torch.Tensor) -> torch.Tensor:
    """Columns to zero mean and unit variance over the rows, then the block divided by
    ``sqrt(width)`` so that a row's expected squared norm is 1; constant columns become 0.

    Row 0 (RecBole's padding item) is left out of the statistics and stays zero.

    Shapes:
        features: ``[n_items, d]``; returns ``[n_items, d]``.
    """
    rows = features[1:]
    std = rows.std(dim=0, unbiased=False)
    out = (features - rows.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    out = out * (std > 0) / features.shape[1] ** 0.5
    out[0] = 0
    return out


class VBPR(MultimodalGeneralRecommender):
    """``f_i`` concatenates the roles of ``self.features`` (``modality_roles``), as loaded or
    standardised once when built (``vbpr_feature_norm``)."""

    input_type = InputType.PAIRWISE
    requires_content = True
    SETTINGS = {
        "embedding_size": whole(1),
        "reg_weight": number(0),
        "vbpr_feature_norm": one_of("none", "standardize"),
        # 'paper': squared L2 on the latent factors and item biases; 'mmrec': MMRec's form.
        "vbpr_regularizer": one_of("paper", "mmrec"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        norm = config["vbpr_feature_norm"]
        self.regularizer = config["vbpr_regularizer"]
        if norm == "standardize":
            for role in self.features:
                self.features[role] = standardize_block(self.features[role])
        width = self.features.width  # F

        # define layers: Eq. 1 of the paper, x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i)
        # + beta'.f_i
        self.user_gamma = nn.Embedding(self.n_users, self.embedding_size)
        self.user_theta = nn.Embedding(self.n_users, self.embedding_size)
        self.item_gamma = nn.Embedding(self.n_items, self.embedding_size)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.projection = nn.Linear(width, self.embedding_size, bias=False)  # E
        self.feature_bias = nn.Linear(width, 1, bias=False)  # beta'
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
        features = self.features.concatenated(item)  # f_i, [*, F]
        if item is None:
            gamma, bias = self.item_gamma.weight, self.item_bias.weight
        else:
            gamma, bias = self.item_gamma(item), self.item_bias(item)
        item_repr = torch.cat([gamma, self.projection(features)], dim=-1)  # [*, 2d]
        return item_repr, (bias + self.feature_bias(features)).squeeze(-1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        pos_score = self.forward(user, pos_item)
        neg_score = self.forward(user, neg_item)
        items = torch.cat([pos_item, neg_item])
        return self.bpr_loss(pos_score, neg_score) + self.reg_weight * self._regularizer(
            user, items
        )

    def _regularizer(self, user, items) -> torch.Tensor:
        """The L2 term (``vbpr_regularizer``) for a batch of B users and 2B items, ``[]``."""
        if self.regularizer == "paper":
            # lambda_Theta ||Theta||^2 of BPR-Opt over the triples' parameters, per triple
            squares = (
                self.user_gamma(user).pow(2).sum()
                + self.user_theta(user).pow(2).sum()
                + self.item_gamma(items).pow(2).sum()
                + self.item_bias(items).pow(2).sum()
            )
            return squares / user.shape[0]
        content = self.features.concatenated(items)
        reg = self.reg_loss(
            self.user_gamma(user),
            self.user_theta(user),
            self.item_gamma(items),
            self.item_bias(items),
            self.projection(content),  # E f_i
            self.feature_bias(content),  # beta'.f_i
        )
        return reg.squeeze(0)  # RecBole's EmbLoss returns shape [1]

    def predict(self, interaction):
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        user_repr = torch.cat([self.user_gamma(user), self.user_theta(user)], dim=-1)  # [B, 2d]
        item_repr, item_offset = self._items()
        return user_repr @ item_repr.T + item_offset  # [B, n_items]
