"""MMGRec: Graph RQ-VAE Rec-IDs and a relation-aware Transformer that generates them.

Reference:
    Han Liu, Yinwei Wei, Xuemeng Song, Weili Guan, Yuan-Fang Li and Liqiang Nie. "MMGRec:
    Multimodal Generative Recommendation with Transformer Model." (Sec. 4, 5.3)

Two stages, run by :class:`recbole_mm.trainer.multistage.MultiStageTrainer`:

1. ``tokenizer`` (Graph RQ-VAE, Sec. 4.2.1): items start as projected multimodal features
   concatenated with a CF embedding (Eq. 4), a mean-aggregation graph convolution runs over the
   user-item graph (Eq. 5), an RQ-VAE quantises the item representations (Eq. 6-9); the BPR and
   RQ-VAE sub-losses of Eq. 10 are optimised alternately, one batch each.
2. ``generator`` (Sec. 4.3-4.4): ``prepare_stage`` assigns every item its Rec-ID, the semantic
   codes plus a popularity token ranking colliding items (Eq. 11-12), logs the collision rate
   before and after and the codebook usage, and copies the learned item and user
   representations into the Transformer's input (Eq. 13) and user-scale MLP (Eq. 18). An
   encoder with relation-aware self-attention (Eq. 14-19) reads a user's training items, a
   standard decoder generates the target's Rec-ID token by token with cross-entropy; RecBole's
   evaluator validates this stage.

Inference (``full_sort_predict``): trie-constrained beam search batched over users, with the
encoder output and the decoder's keys/values cached; the items RecBole masks in this
evaluation (training items; at test also validation items, after ``prepare_evaluation``) are
excluded in the trie so they never take a beam; the beam scores (summed log-probabilities) are
scattered into a ``-inf`` ``[B, n_items]`` matrix, and a row that would leave RecBole's top-K
to unscored items is refused (``ranking_scores``). ``predict`` is the log-probability of the
item's Rec-ID under teacher forcing. The Rec-ID buffer, the trie, the search call and the
scatter are :class:`recbole_mm.model.generative.SemanticIdRecommender`'s; this file holds the
tokenizer, the collision policy (``_tokenize_items``) and the decoding step (``_search_step``).

Deviations (details in docs/models/MMGRec.md):
    - Eq. 10 alternation is per batch: odd batches take a BPR step (graph parameters), even
      batches an RQ-VAE step on the detached item representations of all items (RQ-VAE
      parameters). The paper does not say whether L_rqvae's gradient reaches the graph; the
      authors' code trains the graph first and the RQ-VAE on its frozen output. Squared errors are
      averaged (not summed) over items.
    - The RQ-VAE latent width (``rq_latent_dim``: 4) and the codebooks' uniform start are the
      authors' code's (the paper gives neither); the MLP width is ours. ``rq_kmeans_init``
      (k-means on the first RQ-VAE batch, TIGER's) and ``rq_dead_code_reset`` are our switches,
      off by default.
    - SGD (Sec. 5.3) with the authors' momentum 0.99 (``sgd_momentum``, applied by the
      multi-stage trainer); L2 1e-5 as ``weight_decay``.
    - Encoder input: up to ``history_length`` training items; longer histories are sampled
      uniformly without replacement, afresh for every training instance, and once per user
      with a fixed seed (``history_seed``) for ``predict`` / ``full_sort_predict``.
    - Eq. 18's scalar MLP has one hidden layer and outputs the three scalars (Q, K, V) at once;
      the authors use one linear scalar for all three. Each encoder layer has its own.
    - The decoder embeds the token of level ``l`` with a level-specific table (per-level
      vocabularies) and needs no positional encoding; the popularity level has
      ``popularity_vocab_size`` tokens and a larger collision group is an error.
    - Before the tokenizer has run, Rec-IDs are the base-``rq_codebook_size`` digits of the item
      id, so that an untrained model still produces valid outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.evaluation import evaluation_history
from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import one_of, whole
from recbole_mm.model.generative import (
    SemanticIdRecommender,
    beam_size_for,
    placeholder_codes,
    warn_renamed,
)
from recbole_mm.model.layers.graph import MeanGraphConv
from recbole_mm.model.layers.quantizer import (
    append_collision_index,
    kmeans,
    rq_vae,
)
from recbole_mm.model.layers.relation_attention import (
    CachedTransformerDecoder,
    RelationAwareEncoder,
)
from recbole_mm.model.layers.semantic_ids import history_mask

STAGES = ("tokenizer", "generator")


@torch.no_grad()
def hierarchical_kmeans(x: torch.Tensor, *, n_levels: int, k: int) -> torch.Tensor:
    """Top-down hierarchical k-means codes (HK-Means, the Table 4 baseline).

    Level 1 clusters all rows into ``k`` clusters; every cluster is split again into at most
    ``k`` clusters at the next level, and so on. A row's code at a level is its cluster index
    within its parent cluster; a singleton keeps code 0.

    Shapes:
        x: ``[N, d]``; returns ``[N, n_levels]`` long.
    """
    codes = torch.zeros(x.shape[0], n_levels, dtype=torch.long, device=x.device)
    groups = [torch.arange(x.shape[0], device=x.device)]
    for level in range(n_levels):
        next_groups = []
        for rows in groups:
            if rows.numel() <= 1:
                next_groups.append(rows)
                continue
            centroids = kmeans(x[rows], min(k, rows.numel()))
            assign = torch.cdist(x[rows], centroids).argmin(1)
            codes[rows, level] = assign
            next_groups += [rows[assign == c] for c in assign.unique()]
        groups = next_groups
    return codes


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """The Transformer's sinusoidal positional encoding ``[n, d]`` (Table 5 "Default PE")."""
    position = torch.arange(n, dtype=torch.float).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d // 2]
    return table


def _legacy_report(report: dict) -> dict:
    """The collision report under the keys ``assign_rec_ids`` returned."""
    if not report:
        return {}
    return {"before_popularity_token": report["before"], "after": report["after"]}


class MMGRec(SemanticIdRecommender, MultimodalGeneralRecommender):
    input_type = InputType.PAIRWISE
    requires_content = True  # Eq. 4 projects the concatenated roles of modality_roles
    adjacency_norm = "mean"  # Eq. 5 averages the neighbours
    stages = STAGES
    # Checkpoints written before the semantic-id base named the Rec-ID buffers so.
    legacy_state_keys = {"rec_ids": "item_codes", "rec_ids_assigned": "codes_assigned"}
    # The switches' first value is the paper's model, the others its ablations.
    SETTINGS = {
        "embedding_size": whole(1),
        "rq_levels": whole(1),
        "rq_codebook_size": whole(1),
        "popularity_vocab_size": whole(1, optional=True),
        "history_length": whole(1),
        "beam_size": whole(1, optional=True),
        "rq_input": one_of("graph", "features"),  # Table 3 "ID w/o": RQ-VAE on the raw features
        "rec_id_method": one_of("rqvae", "hkmeans"),  # Table 4 "HK-Means"
        "collision_token": one_of("popularity", "random"),  # Table 4 "Random"
        "encoder_input": one_of("graph", "free"),  # Table 3 "Emb w/o": free input embeddings
        "encoder_position": one_of("relation", "none", "sinusoidal"),  # Table 5
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]  # D
        self.n_levels = config["rq_levels"]  # M - 1
        self.codebook_size = config["rq_codebook_size"]  # L
        self.popularity_vocab_size = config["popularity_vocab_size"] or self.codebook_size
        self.max_history = config["history_length"]  # N
        self.rqvae_input = config["rq_input"]
        self.rec_id_method = config["rec_id_method"]
        self.collision_token = config["collision_token"]
        self.encoder_input = config["encoder_input"]
        self.encoder_position = config["encoder_position"]
        self.finetune_item_embedding = config["finetune_item_embedding"]
        self.exclude_history = config["exclude_history"]
        self.dead_code_reset = config["rq_dead_code_reset"]
        capacity = self.codebook_size**self.n_levels * self.popularity_vocab_size
        if capacity < self.n_items - 1:
            raise ValueError(
                f"rq_codebook_size = {self.codebook_size}, rq_levels = {self.n_levels} and "
                f"popularity_vocab_size = {self.popularity_vocab_size} give {capacity} Rec-IDs "
                f"for {self.n_items - 1} items: raise one of them."
            )
        self.beam_size, self.max_topk = beam_size_for(config)
        # Data, rebuilt from the training split (never saved with the model); the features and
        # the graph come from the base class (self.features, self.adjacency).
        items = torch.as_tensor(dataset.inter_feat[self.ITEM_ID])
        popularity = torch.bincount(items.long(), minlength=self.n_items).float()
        self.register_buffer("popularity", popularity, persistent=False)
        history = dataset.history_item_matrix()[0].long()  # [n_users, H] 0-padded
        # Sorted by id: RecBole's training loader shuffles the rows this matrix is read from.
        history = torch.where(history == 0, self.n_items, history).sort(dim=1).values
        history = history.masked_fill(history == self.n_items, 0)
        self.register_buffer("train_history", history, persistent=False)
        # What RecBole masks in the coming evaluation (prepare_evaluation); until told, the
        # training items, which is its validation mask.
        self.register_buffer("ranking_history", history, persistent=False)
        generator = torch.Generator().manual_seed(config["history_seed"])
        keys = torch.rand(history.shape, generator=generator).masked_fill(history == 0, 2.0)
        self.register_buffer(
            "eval_history", self._subsample(history, keys), persistent=False
        )  # [n_users, <=N]

        # define layers
        d = self.embedding_size
        # Graph RQ-VAE (Sec. 4.2.1)
        self.user_embedding = nn.Embedding(self.n_users, 2 * d)  # h_u^(0)
        self.item_cf_embedding = nn.Embedding(self.n_items, d)  # h_i^c
        self.feature_projection = nn.Linear(self.features.width, d, bias=False)  # W of Eq. 4
        self.graph = MeanGraphConv(
            dims=[2 * d] + [d] * config["n_layers"],
            negative_slope=config["leaky_relu_slope"],
        )
        rqvae_in = d if self.rqvae_input == "graph" else self.features.width
        # E of Eq. 6, the quantiser of Eq. 7-8, D of Eq. 9
        self.rqvae_encoder, self.quantizer, self.rqvae_decoder = rq_vae(
            in_dim=rqvae_in,
            hidden_sizes=config["rq_hidden_sizes"],
            latent_dim=config["rq_latent_dim"],
            n_levels=self.n_levels,
            codebook_size=self.codebook_size,
            beta=config["rq_commitment_weight"],
            kmeans_init=config["rq_kmeans_init"],
        )
        self.bpr_loss = BPRLoss()
        # Rec-ID generation (Sec. 4.3)
        self.vocab_sizes = [self.codebook_size] * self.n_levels + [self.popularity_vocab_size]
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)  # Emb of Eq. 13
        self.register_buffer("user_vectors", torch.zeros(self.n_users, d))  # h_u for Eq. 18
        self.input_dropout = nn.Dropout(config["dropout_prob"])
        self.encoder = RelationAwareEncoder(
            n_layers=config["n_encoder_layers"],
            d_model=d,
            n_heads=config["n_heads"],
            head_dim=config["head_dim"],
            dim_feedforward=config["inner_size"],
            dropout=config["dropout_prob"],
            user_dim=d,
            relation_aware=self.encoder_position == "relation",
        )
        if self.encoder_position == "sinusoidal":
            self.register_buffer(
                "positions", sinusoidal_positions(self.max_history, d), persistent=False
            )
        self.decoder = CachedTransformerDecoder(
            d_model=d,
            n_heads=config["n_heads"],
            n_layers=config["n_decoder_layers"],
            dim_feedforward=config["inner_size"],
            dropout=config["dropout_prob"],
        )
        self.bos = nn.Parameter(torch.zeros(d))
        self.token_embeddings = nn.ModuleList(nn.Embedding(v, d) for v in self.vocab_sizes[:-1])
        self.heads = nn.ModuleList(nn.Linear(d, v) for v in self.vocab_sizes)
        # Rec-IDs [n_items, M], row 0 = -1: until the tokenizer runs, the base-L digits of the
        # item id and a zero popularity token.
        digits = placeholder_codes(
            self.n_items, codebook_size=self.codebook_size, n_levels=self.n_levels, offset=1
        )
        self.init_item_codes(append_collision_index(digits))

        # parameters initialization
        self.apply(xavier_normal_initialization)
        nn.init.normal_(self.bos, std=d**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self._tokenizer_steps = 0
        self.set_stage(STAGES[0])

    # -- stages ------------------------------------------------------------------------------
    def _stage_modules(self) -> dict[str, list]:
        """Tokenizer: the graph and the RQ-VAE (Eq. 4-10); generator: the Transformer (Eq.
        13-17), with the item embeddings when they are free inputs or fine-tuned."""
        generator = [self.encoder, self.decoder, self.token_embeddings, self.heads, self.bos]
        if self.encoder_input == "free" or self.finetune_item_embedding:
            generator.append(self.item_embedding)
        tokenizer = [
            self.user_embedding,
            self.item_cf_embedding,
            self.feature_projection,
            self.graph,
            self.rqvae_encoder,
            self.quantizer,
            self.rqvae_decoder,
        ]
        return {"tokenizer": tokenizer, "generator": generator}

    def prepare_stage(self, stage: str, train_data=None) -> None:
        """Before the generator trains: assign Rec-IDs with the trained tokenizer.

        Idempotent: when the Rec-IDs are already assigned (a generator checkpoint being
        resumed), they and the copied representations are kept as they are.
        """
        if stage == "generator":
            self.ensure_codes()

    @torch.no_grad()
    def _tokenize_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic codes (Eq. 8) and Rec-IDs (Eq. 11-12) of every item, from one pass of the
        trained graph, whose user and item representations become the generator's inputs."""
        user_repr, item_repr = self.graph_forward()
        x = self._rqvae_inputs(item_repr)
        if self.rec_id_method == "rqvae":
            codes = self.quantizer.encode(self.rqvae_encoder(x))  # Eq. 8
        else:
            codes = hierarchical_kmeans(x, n_levels=self.n_levels, k=self.codebook_size)
        codes[0] = -1  # padding item
        # Collision policy: a last token ranking the items that share a code tuple.
        if self.collision_token == "popularity":
            order = self.popularity  # Eq. 11: rank by number of training interactions
        else:
            order = torch.rand(self.n_items, device=codes.device)  # TIGER's random token
        rec_ids = append_collision_index(codes, order=order)  # Eq. 12
        largest = int(rec_ids[:, -1].max())
        if largest >= self.popularity_vocab_size:
            raise ValueError(
                f"{largest + 1} items share one semantic code tuple, more than "
                f"popularity_vocab_size = {self.popularity_vocab_size} tokens: raise "
                f"popularity_vocab_size (or rq_codebook_size) in the MMGRec configuration."
            )
        self.user_vectors.copy_(user_repr)  # h_u of Eq. 18
        if self.encoder_input == "graph":
            self.item_embedding.weight.copy_(item_repr)  # Eq. 13
            self.item_embedding.weight[0].zero_()
        return codes, rec_ids

    # -- Graph RQ-VAE (Sec. 4.2.1) -----------------------------------------------------------
    def graph_forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h_u [n_users, D], h_i [n_items, D])`` after the graph convolution."""
        features = self.features.concatenated()  # f_i, [n_items, F]
        items = torch.cat(  # Eq. 4: h_i^(0) = (f_i W) (+) h_i^c
            [self.feature_projection(features), self.item_cf_embedding.weight], dim=1
        )
        nodes = torch.cat([self.user_embedding.weight, items])  # [n_users + n_items, 2D]
        out = self.graph(self.adjacency, nodes)  # Eq. 5
        return out[: self.n_users], out[self.n_users :]

    def _rqvae_inputs(self, item_repr: torch.Tensor) -> torch.Tensor:
        return item_repr if self.rqvae_input == "graph" else self.features.concatenated()

    def _tokenizer_loss(self, interaction) -> torch.Tensor:
        user_repr, item_repr = self.graph_forward()
        rqvae_turn = self.rec_id_method == "rqvae" and self._tokenizer_steps % 2 == 1
        self._tokenizer_steps += 1
        if not rqvae_turn:  # L_bpr of Eq. 10
            u = user_repr[interaction[self.USER_ID]]
            pos = (u * item_repr[interaction[self.ITEM_ID]]).sum(-1)
            neg = (u * item_repr[interaction[self.NEG_ITEM_ID]]).sum(-1)
            return self.bpr_loss(pos, neg)
        x = self._rqvae_inputs(item_repr.detach())[1:]  # every real item
        z = self.rqvae_encoder(x)  # Eq. 6
        quantized, codes, quantizer_loss = self.quantizer(z)  # Eq. 7-8
        reconstruction = self.rqvae_decoder(quantized)  # Eq. 9 (straight-through)
        if self.dead_code_reset:
            self._reseed_dead_codes(z.detach(), codes)
        return F.mse_loss(reconstruction, x) + quantizer_loss  # L_rqvae of Eq. 10

    @torch.no_grad()
    def _reseed_dead_codes(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """Move every code no item chose to a random item's residual at that level.

        The graph's output drifts while the RQ-VAE trains (Eq. 10's alternation); codes left
        behind by the drift get no gradient and would stay dead, collapsing a level to a few
        codes and raising collisions. Re-seeding is common VQ practice; the paper is silent.
        """
        residuals = self.quantizer.residuals(z)  # [levels, N, latent]
        for level in range(self.n_levels):
            dead = torch.bincount(codes[:, level], minlength=self.codebook_size) == 0
            n_dead = int(dead.sum())
            if n_dead:
                rows = torch.randint(z.shape[0], (n_dead,), device=z.device)
                self.quantizer.codebooks.data[level, dead] = residuals[level, rows]

    # -- Rec-ID generation (Sec. 4.3) --------------------------------------------------------
    def _subsample(self, history: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Up to ``history_length`` items of each row: the smallest keys (invalid items key > 1)."""
        k = min(self.max_history, history.shape[1])
        chosen, index = keys.topk(k, dim=1, largest=False)
        return history.gather(1, index).masked_fill(chosen > 1, 0)

    def _encode(self, user, history):
        """Encoder output ``[B, N, D]`` and padding mask ``[B, N]`` for item sets ``[B, N]``."""
        x = self.item_embedding(history)  # Eq. 13
        if self.encoder_position == "sinusoidal":
            x = x + self.positions[: x.shape[1]]
        padding = history == 0
        return self.encoder(self.input_dropout(x), self.user_vectors[user], padding), padding

    def _decoder_inputs(self, target: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` Rec-IDs -> ``[B, M, D]``: BOS, then the embeddings of tokens 1..M-1."""
        bos = self.bos.expand(target.shape[0], 1, -1)
        tokens = [emb(target[:, level]) for level, emb in enumerate(self.token_embeddings)]
        return torch.cat([bos, torch.stack(tokens, dim=1)], dim=1)

    def _token_log_probs(self, user, history, item) -> torch.Tensor:
        """Teacher-forced ``log p(c_l | c_<l, items)`` of each Rec-ID token, ``[B, M]``."""
        memory, padding = self._encode(user, history)
        target = self.item_codes[item].clamp_min(0)  # [B, M]
        out = self.decoder(self._decoder_inputs(target), memory, padding)  # [B, M, D]
        return torch.stack(
            [
                torch.log_softmax(head(out[:, level]), -1).gather(1, target[:, level : level + 1])[
                    :, 0
                ]
                for level, head in enumerate(self.heads)
            ],
            dim=1,
        )

    def calculate_loss(self, interaction):
        if self.stage == "tokenizer":
            return self._tokenizer_loss(interaction)
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        history = self.train_history[user]  # [B, H]
        # Sec. 4.4: the target is excluded from the encoder input; a fresh sample when longer.
        invalid = (history == 0) | (history == item.unsqueeze(1))
        keys = torch.rand(history.shape, device=history.device).masked_fill(invalid, 2.0)
        log_probs = self._token_log_probs(user, self._subsample(history, keys), item)
        return -log_probs.mean()  # cross-entropy over the Rec-ID tokens

    def predict(self, interaction):
        """Log-probability of the item's whole Rec-ID given the user's items, ``[B]``."""
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return self._token_log_probs(user, self.eval_history[user], item).sum(1)

    def _search_step(self, tokens: torch.Tensor, cache: dict):
        """One decoding step for beam search: ``[B', l]`` tokens -> ``[B', V_l]`` log-probs."""
        level = tokens.shape[1]
        if level == 0:
            x = self.bos.expand(tokens.shape[0], 1, -1)
        else:
            x = self.token_embeddings[level - 1](tokens[:, -1]).unsqueeze(1)
        out, cache = self.decoder.step(x, cache)  # [B', 1, D], cached keys/values
        return torch.log_softmax(self.heads[level](out[:, 0]), dim=-1), cache

    def _search_reorder(self, cache: dict, index: torch.Tensor) -> dict:
        return self.decoder.reorder(cache, index)

    def prepare_evaluation(self, eval_data) -> None:
        """Exclude from generation what RecBole masks when it evaluates on ``eval_data``.

        RecBole's full-sort loader masks the items a user had before the phase (validation:
        training items; test: training and validation items). A beam spent on such an item
        is set to ``-inf`` after ``full_sort_predict``, leaving fewer than ``topk`` ranked
        items, and RecBole fills the gap with unscored items that may be positives. Call this
        before each evaluation; ``None`` (or a sequential loader) restores the training items.
        """
        history = None if eval_data is None else evaluation_history(eval_data, n_users=self.n_users)
        history = self.train_history if history is None else history
        self.ranking_history = history.to(self.train_history.device)

    def _masked(self, user: torch.Tensor) -> torch.Tensor:
        """bool ``[B, n_items]``: the items RecBole masks for these users."""
        return history_mask(self.ranking_history[user], n_items=self.n_items)

    def _ranking_mask(self, interaction) -> torch.Tensor:
        return self._masked(interaction[self.USER_ID])

    def generate(
        self,
        user: torch.Tensor,
        *,
        beam_size: int | None = None,
        masked: torch.Tensor | None = None,
    ):
        """Top ``beam_size`` unmasked items per user by constrained beam search: ``(items,
        scores)``, best first; ``-1`` / ``-inf`` mark beams left without a valid continuation.

        ``masked`` (default: the evaluation's mask, see :meth:`prepare_evaluation`) is
        excluded in the trie (``exclude_history``); without the exclusion the search
        over-generates by each batch's largest mask instead, so that at least ``beam_size``
        unmasked items remain once RecBole masks the others.
        """
        memory, padding = self._encode(user, self.eval_history[user])
        masked = self._masked(user) if masked is None else masked.to(memory.device)
        beam = beam_size or self.beam_size
        excluded = masked if self.exclude_history else None
        if not self.exclude_history:
            beam += int(masked.sum(1).max())
        return self.constrained_search(
            self.decoder.start(memory, padding),
            batch_size=user.shape[0],
            beam_size=beam,
            excluded=excluded,
            device=memory.device,
        )

    def _generate(self, interaction, masked: torch.Tensor):
        return self.generate(interaction[self.USER_ID], masked=masked)

    # -- names before the semantic-id base (deprecated, removed in the next release) -------------
    @property
    def rec_ids(self) -> torch.Tensor:
        warn_renamed("MMGRec.rec_ids", "item_codes")
        return self.item_codes

    @property
    def rec_ids_assigned(self) -> torch.Tensor:
        warn_renamed("MMGRec.rec_ids_assigned", "codes_assigned")
        return self.codes_assigned

    @property
    def rec_id_report(self) -> dict:
        warn_renamed("MMGRec.rec_id_report", "code_report (keys 'before', 'after')")
        return _legacy_report(self.code_report)

    def assign_rec_ids(self) -> dict:
        warn_renamed("MMGRec.assign_rec_ids()", "assign_codes() (keys 'before', 'after')")
        return _legacy_report(self.assign_codes())
