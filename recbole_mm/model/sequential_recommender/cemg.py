"""CEMG: collaborative-guided multimodal item tokens and T5 generation of the next item.

Reference:
    Yuzhen Lin et al. "CEMG: Collaborative-Enhanced Multimodal Generative Recommendation."
    (Sec. 3: Eq. 2-3 fusion, Eq. 4 RQ-VAE, Eq. 5 next-token loss, Eq. 6 beam scores.)

Three stages, run in order by :class:`recbole_mm.trainer.multistage.MultiStageTrainer`:
``collab`` (LightGCN item embeddings and the fusion weights), ``tokenizer`` (RQ-VAE on the
fused item vectors) and ``generator`` (T5 on history prompts, validated with RecBole's
full-ranking evaluator through trie-constrained beam search). The RQ-VAE, the collision policy,
the prompts, the generator and the search are those CEMG shares with TIGER
(:class:`~recbole_mm.model.sequential_recommender.semantic_id_sequential.SemanticIdSequentialRecommender`,
over :class:`recbole_mm.model.generative.SemanticIdRecommender`); this file holds the collab
stage (PCA, LightGCN, the fusion of Eq. 2-3), the diversity term of Eq. 4 and the "w/o LLM"
decoder. A resumed generator keeps its codes; setting the collab or tokenizer stage again
clears them.

Deviations:
    - Fusion weights (W_q, W_k of Eq. 2; the paper does not say how they are trained) are learnt
      in the ``collab`` stage with LightGCN's BPR loss, the item side being
      ``e^c_i + sum_m alpha_m e^m_i``: the weights are pushed towards the modality that predicts
      the user's interactions given the item's collaborative context, the paper's stated
      hypothesis. They are frozen afterwards, so the RQ-VAE cannot move its own target x_i.
    - A modality narrower than ``d`` (768, the paper's; ml-100k-mm's kg is 64-d, MiniLM text
      384-d) keeps all its principal components, zero-padded to ``d``. Each PCA-reduced
      modality and each half of x_i is scaled to unit root-mean-square row norm so that neither
      modality nor the collaborative half dominates by scale.
    - Eq. 4's quantisation term is the codebook term plus lambda_q (``rq_commitment_weight``) x
      the commitment term (TIGER, LETTER). The diversity loss (the paper cites [12] without a formula) is the
      normalised negative entropy of the batch-averaged soft code assignment per level
      (wav2vec 2.0's codebook diversity penalty), computed on the detached residuals, so it
      moves the codebooks towards the data and keeps codes in use.
    - Collisions: ``collision_policy: reassign`` (default) moves every item but one of a group
      sharing all codes to the nearest last-level code that is free under its prefix (LETTER
      resolves collisions on the last level); ``append`` adds TIGER's extra level instead.
    - The prompt is the last ``history_length`` items (20, as LETTER); the paper sets no limit.
    - The paper fine-tunes a pretrained T5 of unstated size; none ships and nothing is
      downloaded, so without a local checkpoint (``t5_checkpoint``) a T5 of t5-base's shape
      (d_model 768 = the paper's d, 12 + 12 layers) is trained from scratch (LETTER-TIGER's
      setting). "w/o LLM" (``generator_backbone: decoder``) is a GPT-2-style decoder-only
      Transformer with ``decoder_only_layers`` blocks (6, the paper's "standard 6-layer
      Transformer decoder") at the T5's widths; it must have fewer parameters than the T5 it
      replaces (as the paper's replaces an LLM), else the model refuses it, naming the number
      of layers that fits. Without pre-training the ablation compares sizes and architectures.
    - Sequential full ranking in RecBole masks no item; beam search excludes none either. A row
      with fewer than ``max(topk)`` generated items (and not every item) is refused rather than
      left to RecBole's ``-inf`` tie order (``ranking_scores``); ``beam_size`` defaults to
      ``max(topk)``.
    - Leave-one-out only (the paper's protocol): a pre-split dataset (``benchmark_filename``,
      e.g. ``amazon-sports``' MMRec split) is refused with what to build instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mm.model.checks import one_of, whole
from recbole_mm.model.generative import warn_renamed
from recbole_mm.model.layers.fusion import CollaborativeGuidedFusion
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.pca import PCA
from recbole_mm.model.layers.t5_generator import count_parameters
from recbole_mm.model.sequential_recommender.semantic_id_sequential import (
    SemanticIdSequentialRecommender,
)

ROLES = ("visual", "textual")


def diversity_loss(
    codebooks: torch.Tensor, residuals: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """``1/M sum_m (1 - H(mean_n p_m(.|r_n)) / log K)``, ``p_m = softmax(-||r - b||^2 / tau_m)``.

    ``tau_m`` is ``temperature`` x the mean squared distance at level ``m`` (scale-free). Zero
    when the batch uses every code equally, one when it puts all its mass on one code.

    Shapes:
        codebooks: ``[M, K, d]``; residuals: ``[M, N, d]``; returns ``[]``.
    """
    levels, size, _ = codebooks.shape
    total = codebooks.new_zeros(())
    for m in range(levels):
        r, b = residuals[m], codebooks[m]
        dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ b.T + b.pow(2).sum(1)  # [N, K]
        p = (-dist / (temperature * dist.mean().detach().clamp_min(1e-12))).softmax(-1)
        p_bar = p.mean(0)  # [K]
        entropy = -(p_bar * p_bar.clamp_min(1e-12).log()).sum()
        total = total + 1 - entropy / math.log(size)
    return total / levels


class CEMG(SemanticIdSequentialRecommender):
    """Content roles visual and textual (``modality_roles``, ``self.features``, PCA-reduced
    in ``_build_item_side``) and the LightGCN graph of the training sequences (``self.adjacency``)
    come from :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender`; the RQ-VAE,
    the generator and the search from :class:`SemanticIdSequentialRecommender`."""

    content_roles = ROLES
    require_content_roles = True
    adjacency_norm = "symmetric"
    stages = ("collab", "tokenizer", "generator")
    SETTINGS = {
        **SemanticIdSequentialRecommender.SETTINGS,
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "decoder_only_layers": whole(1),
        "generator_backbone": one_of("t5", "decoder"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # _build_item_side builds the collab stage's layers
        # parameters initialization
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def _build_item_side(self, config, dataset) -> int:
        """The collab stage: PCA-reduced content, LightGCN embeddings and the fusion of Eq. 2-3;
        x_i has width d per part (content, collaborative)."""
        # load parameters
        self.dim = config["embedding_size"]
        self.use_collab = config["use_collab"]
        self.roles = list(self.modality_roles)  # the content roles used, in ROLES order
        self.gcn_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.lambda_d = config["lambda_d"]
        self.diversity_temperature = config["diversity_temperature"]
        if not self.use_collab and not self.roles:
            raise ValueError(
                f"CEMG: use_collab is False and modality_roles = {config['modality_roles']!r} "
                "uses no content role: nothing would represent the items."
            )

        # data: PCA-reduced content (Sec. 3.2); the training graph is the base class's adjacency
        for role in self.roles:
            self.features[role] = self._reduce(self.features[role])  # [n_items, d]

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        self.propagation = LightGCNPropagation(n_layers=self.gcn_layers)
        self.fusion = CollaborativeGuidedFusion(dim=self.dim)
        return self.dim * (int(self.use_collab) + int(bool(self.roles)))

    def _generator_options(self, config, sizes: dict) -> dict:
        backbone = config["generator_backbone"]
        if backbone == "decoder":
            self._check_smaller_than_t5(config, sizes)
        layers = config["t5_layers" if backbone == "t5" else "decoder_only_layers"]
        return {"backbone": backbone, "n_layers": layers}

    def _tokenizer_regulariser(self, z: torch.Tensor) -> torch.Tensor:
        """lambda_d x the diversity loss of Eq. 4, on the detached residuals."""
        div = diversity_loss(
            self.quantizer.codebooks,
            self.quantizer.residuals(z),
            temperature=self.diversity_temperature,
        )
        return self.lambda_d * div

    def _stage_modules(self) -> dict[str, tuple]:
        collab = (self.user_embedding, self.item_embedding, self.fusion)
        return {"collab": collab, **super()._stage_modules()}

    def _item_vectors(self) -> torch.Tensor:
        return self._fused_items()

    def calculate_loss(self, interaction):
        if self.stage == "collab":
            return self._collab_loss(interaction)
        return super().calculate_loss(interaction)

    # -- configuration ------------------------------------------------------------------------
    @staticmethod
    def _check_smaller_than_t5(config, sizes: dict) -> None:
        """ "w/o LLM" replaces the LLM with a smaller Transformer trained from scratch (Sec. 4.3:
        a 6-layer decoder in place of the LLM); a decoder at least as large as the T5 it
        replaces would invert the ablation."""
        decoder = count_parameters(
            backbone="decoder", n_layers=config["decoder_only_layers"], **sizes
        )
        t5 = count_parameters(backbone="t5", n_layers=config["t5_layers"], **sizes)
        if decoder >= t5:
            fits = [
                n
                for n in range(1, config["decoder_only_layers"])
                if count_parameters(backbone="decoder", n_layers=n, **sizes) < t5
            ]
            hint = f"decoder_only_layers <= {fits[-1]}" if fits else "a larger T5 (t5_layers)"
            raise ValueError(
                f"generator_backbone = 'decoder' (\"w/o LLM\") with decoder_only_layers = "
                f"{config['decoder_only_layers']} has {decoder:,} parameters, not fewer than the "
                f"{t5:,} of the T5 it replaces (t5_layers = {config['t5_layers']}, t5_d_model = "
                f"{config['t5_d_model']}): the ablation would be larger than the model. Use "
                f"{hint}."
            )

    def _reduce(self, features: torch.Tensor) -> torch.Tensor:
        """PCA to ``d`` fitted on the real items (row 0 is padding), unit RMS row norm.

        A modality with fewer than ``d`` dimensions (or items) keeps all its principal
        components, zero-padded to ``d`` (the paper's d = 768 exceeds MiniLM's 384-d text).
        """
        keep = min(self.dim, features.shape[0] - 1, features.shape[1])
        reduced = PCA(n_components=keep).fit_transform(features[1:])
        reduced = F.pad(reduced, (0, self.dim - keep))
        reduced = reduced / reduced.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
        return torch.cat([reduced.new_zeros(1, self.dim), reduced])

    # -- Sec. 3.2: collaborative embedding and fusion -----------------------------------------
    def _propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        out = self.propagation(self.adjacency, ego)  # [n_users + n_items, d]
        return out[: self.n_users], out[self.n_users :]

    def _fused_items(self) -> torch.Tensor:
        """x_i of Eq. 3 for every item ``[n_items, 2d]`` (each half at unit RMS row norm)."""
        collab = self._propagate()[1] if self.use_collab else None
        if not self.roles:
            parts = [collab]
        else:
            fused, _ = self.fusion(collab, self.features.values())
            parts = [fused] if collab is None else [fused[:, : self.dim], collab]
        parts = [p / p[1:].pow(2).sum(1).mean().sqrt().clamp_min(1e-12) for p in parts]
        return torch.cat(parts, 1)

    def _collab_loss(self, interaction):
        """LightGCN's BPR with the fused content added to the item side (trains Eq. 2)."""
        users, items = self._propagate()
        if self.roles:
            content, _ = self.fusion(items if self.use_collab else None, self.features.values())
            items = items + content[:, : self.dim]
        user = interaction[self.USER_ID]
        pos = interaction[self.POS_ITEM_ID]
        neg = torch.randint(1, self.n_items, pos.shape, device=pos.device)
        u = users[user]
        margin = (u * items[pos]).sum(-1) - (u * items[neg]).sum(-1)
        reg = (
            self.user_embedding(user).pow(2).sum()
            + self.item_embedding(pos).pow(2).sum()
            + self.item_embedding(neg).pow(2).sum()
        ) / len(user)
        return -F.logsigmoid(margin).mean() + self.reg_weight * reg

    @property
    def tokenization_report(self) -> dict:
        warn_renamed("CEMG.tokenization_report", "code_report")
        return self.code_report
