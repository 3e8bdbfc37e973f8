"""LATTICE: item-item graphs learned from projected content, anchored to the graphs of the raw
content, convolved over item ID embeddings and added to LightGCN's item representations.

Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Shu Wu, Shuhui Wang and Liang Wang. "Mining Latent
    Structures for Multimedia Recommendation." ACM MM 2021 (arXiv:2104.09036). Official code:
    CRIPAC-DIG/LATTICE; the version read here is MMRec's (enoche/MMRec, models/lattice.py,
    configs/model/LATTICE.yaml).

Equations are named after the paper's parts: (G1) the initial kNN graph of each modality's raw
features, (G2) the learned kNN graph of the projected features, (G3) the skip connection
``A_m = (1 - lambda) A_m^learned + lambda A_m^initial``, (G4) the softmax-weighted sum over
modalities, (G5) the item-item convolution, (G6) the item representation ``e_i + h_i/||h_i||``,
(L) BPR with an L2 penalty. docs/models/LATTICE.md maps each to the code.

Deviations:
    - The skip connection is applied per modality and then summed (the paper's order); MMRec's
      code sums the modalities' raw learned kNN matrices and normalises the sum once.
    - Learned graphs keep the similarity values floored at 0, so that a row's degree cannot be
      negative (the code would give NaN there).
    - The user-item graph is LightGCN's symmetric one (the base class's); MMRec's LATTICE uses
      ``D^-1 (A + I)``.
    - As in the code, the learned graph is rebuilt once per training epoch from the current
      projections; the epoch's first batch back-propagates through it, the others use it
      detached. Evaluation builds it once per pass.
    - Raw features stay fixed (the code trains them too); RecBole's Xavier normal initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, whole
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.knn_graph import knn_item_graph, weighted_graph_sum


class LATTICE(MultimodalGeneralRecommender):
    """Users: LightGCN; items: LightGCN + the normalised output of the latent item graph."""

    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "n_mm_layers": whole(0),
        "knn_k": whole(1),
        "lambda_coeff": number(0, 1),
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
        self.lambda_coeff = config["lambda_coeff"]
        self.reg_weight = config["reg_weight"]

        # (G1): the initial graphs, from the raw features, fixed
        for i, role in enumerate(self.features):
            initial = knn_item_graph(self.features[role], k=self.knn_k, weighted=True)
            self.register_buffer(f"initial_graph_{i}", initial, persistent=False)

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.propagation = LightGCNPropagation(n_layers=self.n_layers)
        # (G2): x~_m = x_m W_m + b_m, whose similarities give the learned graphs
        self.projections = nn.ModuleDict(
            {
                role: nn.Linear(self.features[role].shape[1], self.embedding_size)
                for role in self.features
            }
        )
        # (G4): modality importance, softmax-normalised
        self.modal_logits = nn.Parameter(torch.zeros(len(self.features)))
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self._graph: torch.Tensor | None = None
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def _initial(self, i: int) -> torch.Tensor:
        return getattr(self, f"initial_graph_{i}")

    def item_graph(self) -> torch.Tensor:
        """(G2)-(G4): ``A = sum_m alpha_m ((1 - lambda) A_m^learned + lambda A_m^initial)``."""
        alpha = self.modal_logits.softmax(0)
        graphs, weights = {}, {}
        for i, (role, projection) in enumerate(self.projections.items()):
            learned = knn_item_graph(projection(self.features[role]), k=self.knn_k, weighted=True)
            graphs[f"{role}/learned"], weights[f"{role}/learned"] = (
                learned,
                alpha[i] * (1 - self.lambda_coeff),
            )
            graphs[f"{role}/initial"] = self._initial(i)
            weights[f"{role}/initial"] = alpha[i] * self.lambda_coeff
        return weighted_graph_sum(graphs, weights)

    def train(self, mode: bool = True):
        # RecBole calls train() at the start of every epoch: rebuild the learned graph then.
        self._graph = None
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._graph = None
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def forward(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users [n_users, d], items [n_items, d])`` with the item graph ``graph``."""
        h = self.item_embedding.weight
        for _ in range(self.n_mm_layers):  # (G5): h = A h
            h = torch.sparse.mm(graph, h)
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        users, items = torch.split(
            self.propagation(self.adjacency, ego), [self.n_users, self.n_items]
        )
        return users, items + F.normalize(h, dim=1)  # (G6)

    def _training_graph(self) -> torch.Tensor:
        if self._graph is None:  # the epoch's first batch: through the learned graph
            graph = self.item_graph()
            self._graph = graph.detach()
            return graph
        return self._graph

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self._training_graph())
        u, pos, neg = users[user], items[pos_item], items[neg_item]
        loss = self.bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        # (L): L2 of the batch's final representations, 1/2 sum of squares per batch row
        reg = self.reg_loss(u, pos, neg, require_pow=True).squeeze(0)
        return loss + self.reg_weight * reg

    def _eval_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._eval_cache is None or self.training:
            with torch.no_grad():
                cache = self.forward(self.item_graph())
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
