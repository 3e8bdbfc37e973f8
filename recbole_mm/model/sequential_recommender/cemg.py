"""CEMG: collaborative-guided multimodal item tokens and T5 generation of the next item.

Reference:
    Yuzhen Lin et al. "CEMG: Collaborative-Enhanced Multimodal Generative Recommendation."
    (Sec. 3: Eq. 2-3 fusion, Eq. 4 RQ-VAE, Eq. 5 next-token loss, Eq. 6 beam scores.)

Three stages, run in order by :class:`recbole_mm.trainer.multistage.MultiStageTrainer`:
``collab`` (LightGCN item embeddings and the fusion weights), ``tokenizer`` (RQ-VAE on the
fused item vectors) and ``generator`` (T5 on history prompts, validated with RecBole's
full-ranking evaluator through trie-constrained beam search). The item codes, the trie, the
search call and ``full_sort_predict`` are those of
:class:`recbole_mm.model.generative.SemanticIdRecommender`; this file holds the tokenizer, the
collision policy (``_tokenize_items``) and the generator. A resumed generator keeps its codes;
setting the collab or tokenizer stage again clears them.

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
from recbole.utils import InputType
from torch import nn

from recbole_mm.data.dataset import MultimodalSequentialDataset
from recbole_mm.model.abstract_recommender import MultimodalSequentialRecommender
from recbole_mm.model.generative import SemanticIdRecommender, placeholder_codes, warn_renamed
from recbole_mm.model.layers.fusion import CollaborativeGuidedFusion
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.pca import PCA
from recbole_mm.model.layers.quantizer import (
    CodeSpaceFull,
    ResidualQuantizer,
    append_collision_index,
    mlp,
    reassign_last_level,
)
from recbole_mm.model.layers.t5_generator import CodeGenerator, count_parameters

ROLES = ("visual", "textual")
COLLISION_POLICIES = ("reassign", "append")


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


class CEMGDataset(MultimodalSequentialDataset):
    """The multimodal sequential dataset, refusing pre-split files with what to use instead.

    RecBole's sequential datasets read ``benchmark_filename`` files only as ready-made
    ``item_id_list`` sequences and fail with an ``AttributeError`` on plain interaction files
    such as the MMRec split of ``amazon-sports``.
    """

    def __init__(self, config):
        if config["benchmark_filename"]:
            name = config["dataset"]
            raise ValueError(
                f"CEMG is evaluated leave-one-out (its paper's protocol), but dataset '{name}' "
                f"is pre-split (benchmark_filename = {list(config['benchmark_filename'])}), "
                "which a sequential model cannot read. Build a leave-one-out copy with "
                "dataset_tools.amazon --split loo (e.g. --name amazon-sports-seq) and a YAML "
                "like properties/dataset/amazon-beauty.yaml; docs/models/CEMG.md has the commands."
            )
        super().__init__(config)


class CEMG(SemanticIdRecommender, MultimodalSequentialRecommender):
    """Content roles visual and textual (``modality_roles``, ``self.features``, PCA-reduced
    in ``__init__``) and the LightGCN graph of the training sequences (``self.adjacency``)
    come from :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender`."""

    input_type = InputType.POINTWISE
    content_roles = ROLES
    require_content_roles = True
    adjacency_norm = "symmetric"
    stages = ("collab", "tokenizer", "generator")
    dataset_class = CEMGDataset

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.dim = config["embedding_size"]
        self.use_collab = config["use_collab"]
        self.roles = list(self.modality_roles)  # the content roles used, in ROLES order
        self.gcn_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.n_levels = config["rq_levels"]
        self.codebook_size = config["rq_codebook_size"]
        self.lambda_q, self.lambda_d = config["rq_commitment_weight"], config["lambda_d"]
        self.diversity_temperature = config["diversity_temperature"]
        self.rq_batch_size = config["rq_batch_size"]
        self.collision_policy = config["collision_policy"]
        self.history_length = config["history_length"]
        self.max_topk = max(config["topk"])
        self.beam_size = config["beam_size"] or self.max_topk
        self.generation_batch_size = config["generation_batch_size"]
        self.generation_backend = config["generation_backend"]
        self._check(config)

        # data: PCA-reduced content (Sec. 3.2), item popularity; the training graph is the base
        # class's self.adjacency
        for role in self.roles:
            self.features[role] = self._reduce(self.features[role])  # [n_items, d]
        _, items = dataset.interaction_pairs()
        self.n_users = dataset.num(self.USER_ID)
        popularity = torch.bincount(items, minlength=self.n_items)
        self.register_buffer("item_popularity", popularity, persistent=False)  # [n_items]

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        self.propagation = LightGCNPropagation(n_layers=self.gcn_layers)
        self.fusion = CollaborativeGuidedFusion(dim=self.dim)
        x_dim = self.dim * (int(self.use_collab) + int(bool(self.roles)))
        hidden = list(config["rq_hidden_sizes"])
        latent = config["rq_latent_dim"]
        self.rq_encoder = mlp([x_dim, *hidden, latent])
        self.quantizer = ResidualQuantizer(
            n_levels=self.n_levels,
            codebook_size=self.codebook_size,
            dim=latent,
            beta=self.lambda_q,
            kmeans_init=config["rq_kmeans_init"],
        )
        self.rq_decoder = mlp([latent, *hidden[::-1], x_dim])
        code_levels = self.n_levels + int(self.collision_policy == "append")
        self.vocab_sizes = [self.codebook_size] * code_levels
        sizes = dict(
            vocab_sizes=self.vocab_sizes,
            d_model=config["t5_d_model"],
            d_ff=config["t5_d_ff"],
            n_heads=config["t5_heads"],
            dropout=config["t5_dropout"],
            max_prompt_tokens=self.history_length * code_levels,
        )
        if config["generator_backbone"] == "decoder":
            self._check_smaller_than_t5(config, sizes)
        self.generator = CodeGenerator(
            backbone=config["generator_backbone"],
            n_layers=config[
                "t5_layers" if config["generator_backbone"] == "t5" else "decoder_only_layers"
            ],
            checkpoint=config["t5_checkpoint"],
            **sizes,
        )
        # Item codes [n_items, L], saved with the model; until the tokenizer stage assigns them,
        # each item's id written in base K (unique and valid, so the generator runs from the start).
        self.init_item_codes(
            placeholder_codes(self.n_items, codebook_size=self.codebook_size, n_levels=code_levels)
        )
        self.register_buffer("tokenizer_input", torch.zeros(0), persistent=False)
        self.stage = self.stages[-1]

        # parameters initialization
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    # -- configuration ------------------------------------------------------------------------
    def _check(self, config):
        if not self.use_collab and not self.roles:
            raise ValueError(
                f"CEMG: use_collab is False and modality_roles = {config['modality_roles']!r} "
                "uses no content role: nothing would represent the items."
            )
        if self.generation_backend not in ("hf", "shared"):
            raise ValueError(
                f"generation_backend = {self.generation_backend!r} must be 'hf' "
                "(transformers' generate with a trie logits processor) or 'shared' "
                "(recbole_mm.model.layers.semantic_ids.constrained_beam_search)."
            )
        if self.collision_policy not in COLLISION_POLICIES:
            raise ValueError(
                f"collision_policy = {self.collision_policy!r} must be one of {COLLISION_POLICIES}."
            )
        if self.beam_size < self.max_topk:
            raise ValueError(
                f"beam_size = {self.beam_size} is below the largest cut-off in topk = "
                f"{list(config['topk'])}: items outside the beams would be ranked arbitrarily. "
                f"Set beam_size >= {self.max_topk}, leave it empty (~) to use max(topk), or "
                "drop the larger cut-offs from topk."
            )
        for key in ("embedding_size", "rq_levels", "rq_codebook_size", "history_length"):
            if config[key] < 1:
                raise ValueError(f"CEMG: {key} = {config[key]} must be >= 1.")

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

    # -- stages -------------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ValueError(f"CEMG: unknown stage {stage!r}; stages are {self.stages}.")
        self.stage = stage
        if stage != "generator":
            self.codes_assigned.fill_(False)  # a (re)trained tokenizer needs new codes
        trainable = {
            "collab": (self.user_embedding, self.item_embedding, self.fusion),
            "tokenizer": (self.rq_encoder, self.quantizer, self.rq_decoder),
            "generator": (self.generator,),
        }[stage]
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for module in trainable:
            module.requires_grad_(True)

    def prepare_stage(self, stage: str, train_data=None) -> None:
        if stage == "tokenizer":
            self.tokenizer_input = self._fused_items().detach()
            if not bool(self.quantizer.initialised):  # k-means on every item, not one batch
                with torch.no_grad():
                    self.quantizer.train()(self.rq_encoder(self.tokenizer_input[1:]))
        elif stage == "generator":  # a resumed generator keeps its codes
            self.ensure_codes()

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

    # -- Sec. 3.3: RQ-VAE ---------------------------------------------------------------------
    def _tokenizer_loss(self):
        if self.tokenizer_input.numel() == 0:
            self.tokenizer_input = self._fused_items().detach()
        x_all = self.tokenizer_input
        n = min(self.rq_batch_size, self.n_items - 1)
        x = x_all[torch.randperm(self.n_items - 1, device=x_all.device)[:n] + 1]
        z = self.rq_encoder(x)
        quantized, _, quant_loss = self.quantizer(z)
        recon = F.mse_loss(self.rq_decoder(quantized), x)
        div = diversity_loss(
            self.quantizer.codebooks,
            self.quantizer.residuals(z),
            temperature=self.diversity_temperature,
        )
        return recon + quant_loss + self.lambda_d * div  # Eq. 4

    @torch.no_grad()
    def _tokenize_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """RQ-VAE codes of every item and the codes after ``collision_policy``, row 0 = -1."""
        x = self._fused_items()[1:] if self.tokenizer_input.numel() == 0 else None
        x = self.tokenizer_input[1:] if x is None else x
        z = self.rq_encoder(x)
        codes = self.quantizer.encode(z)  # [n_items - 1, M]
        order = self.item_popularity[1:]
        if self.collision_policy == "append":
            unique = append_collision_index(codes, order=order)
            if int(unique[:, -1].max()) >= self.codebook_size:
                raise ValueError(
                    f"collision_policy = 'append': {int(unique[:, -1].max()) + 1} items share "
                    f"one code tuple, more than rq_codebook_size = {self.codebook_size}."
                )
        else:
            residuals = self.quantizer.residuals(z)
            try:
                unique = reassign_last_level(codes, residuals, self.quantizer.codebooks, order)
            except CodeSpaceFull as error:
                raise CodeSpaceFull(
                    f"collision_policy = 'reassign': {error} Set collision_policy: append or a "
                    f"larger rq_codebook_size (now {self.codebook_size})."
                ) from error
        return _with_padding_row(codes), _with_padding_row(unique)

    @property
    def tokenization_report(self) -> dict:
        warn_renamed("CEMG.tokenization_report", "code_report")
        return self.code_report

    # -- Sec. 3.4: generation -----------------------------------------------------------------
    def _prompt(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """Code tokens of the last ``history_length`` items, oldest first ``[B, h*L]``."""
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        h = min(self.history_length, seq.shape[1])
        start = (length - h).clamp(min=0)  # [B]
        index = start[:, None] + torch.arange(h, device=seq.device)  # [B, h]
        items = seq.gather(1, index.clamp(max=seq.shape[1] - 1))
        items = items.masked_fill(index >= length[:, None], 0)  # right-padded
        tokens = self.generator.tokens.tokens(self.item_codes[items])  # [B, h, L]
        mask = (items > 0)[:, :, None].expand_as(tokens)
        return tokens.flatten(1), mask.flatten(1).long()

    def _target(self, items):
        return self.generator.tokens.tokens(self.item_codes[items])  # [B, L]

    def calculate_loss(self, interaction):
        if self.stage == "collab":
            return self._collab_loss(interaction)
        if self.stage == "tokenizer":
            return self._tokenizer_loss()
        prompt, mask = self._prompt(interaction)
        return self.generator.loss(prompt, mask, self._target(interaction[self.POS_ITEM_ID]))

    def predict(self, interaction):
        """Eq. 6 score of the given item: the sum of its codes' log-probabilities ``[B]``."""
        prompt, mask = self._prompt(interaction)
        target = self._target(interaction[self.ITEM_ID])
        return self.generator.log_likelihood(prompt, mask, target)

    def _generate(self, interaction, masked):
        """Eq. 6 beams ``[B, beam]``, ``generation_batch_size`` prompts at a time.

        RecBole masks no item for a sequential model (``masked`` is ``None``), so every row must
        hold ``max(topk)`` generated items (or every item) for ``full_sort_predict``.
        """
        prompt, mask = self._prompt(interaction)
        items, scores = [], []
        for lo in range(0, prompt.shape[0], self.generation_batch_size):
            hi = lo + self.generation_batch_size
            chunk, chunk_mask = prompt[lo:hi], mask[lo:hi]
            found = self.generator.generate(
                chunk,
                chunk_mask,
                trie=self.trie,
                beam_size=self.beam_size,
                backend=self.generation_backend,
            )
            items.append(found[0])
            scores.append(found[1])
        return torch.cat(items), torch.cat(scores)


def _with_padding_row(codes: torch.Tensor) -> torch.Tensor:
    """``[n_items - 1, L]`` codes of the real items -> ``[n_items, L]`` with row 0 = -1."""
    return torch.cat([codes.new_full((1, codes.shape[1]), -1), codes])
