"""The sequential semantic-id recommender that TIGER and CEMG share.

Reference:
    Shashank Rajput et al. "Recommender Systems with Generative Retrieval." NeurIPS 2023 (TIGER:
    RQ-VAE semantic ids of item vectors, Sec. 3.1; a Transformer encoder-decoder that generates
    the next item's ids from the history's, Sec. 3.2).
    Yuzhen Lin et al. "CEMG: Collaborative-Enhanced Multimodal Generative Recommendation."
    (Sec. 3.3 Eq. 4, Sec. 3.4 Eq. 5-6: the same two parts on a collaborative-guided item vector.)

:class:`SemanticIdSequentialRecommender` owns the part both models share: an RQ-VAE tokenizer
(MLP encoder, :class:`~recbole_mm.model.layers.quantizer.ResidualQuantizer`, mirrored decoder)
over one vector per item, the collision policy, a
:class:`~recbole_mm.model.layers.t5_generator.CodeGenerator` that reads the code tokens of the
last ``history_length`` items and writes the next item's, and trie-constrained beam search
(through :class:`~recbole_mm.model.generative.SemanticIdRecommender`). Stages ``tokenizer`` and
``generator`` run in order under :class:`~recbole_mm.trainer.multistage.MultiStageTrainer`.

A model subclasses it and defines:
    - ``_build_item_side(config, dataset) -> int``: its own data and layers (built before the
      RQ-VAE, so that their parameters are drawn first) and the width of the item vectors;
    - ``_item_vectors() -> [n_items, x_dim]``: what the RQ-VAE tokenises (row 0: padding);
and may override ``_generator_options`` (backbone, depth, head width, extra prompt tokens),
``_tokenizer_regulariser`` (a term added to the tokenizer loss), ``_stage_modules`` and
``calculate_loss`` (for a stage of its own) and ``_prompt`` (tokens ahead of the history).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_mm.data.dataset import LeaveOneOutDataset
from recbole_mm.model.abstract_recommender import MultimodalSequentialRecommender
from recbole_mm.model.checks import one_of, whole
from recbole_mm.model.generative import SemanticIdRecommender, beam_size_for, placeholder_codes
from recbole_mm.model.layers.quantizer import (
    CodeSpaceFull,
    append_collision_index,
    reassign_last_level,
    rq_vae,
)
from recbole_mm.model.layers.t5_generator import CodeGenerator


class SemanticIdSequentialRecommender(SemanticIdRecommender, MultimodalSequentialRecommender):
    """RQ-VAE item codes and a generator of the next item's codes (see the module docstring)."""

    input_type = InputType.POINTWISE
    stages: tuple[str, ...] = ("tokenizer", "generator")
    dataset_class = LeaveOneOutDataset
    SETTINGS = {
        "rq_levels": whole(1),
        "rq_codebook_size": whole(1),
        "history_length": whole(1),
        "beam_size": whole(1, optional=True),
        # reassign: a free last-level code (CEMG); append: a further code level (TIGER)
        "collision_policy": one_of("reassign", "append"),
        # hf: transformers' generate with a trie logits processor; shared: the project's
        # constrained_beam_search (the same items and scores)
        "generation_backend": one_of("shared", "hf"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.n_levels = config["rq_levels"]
        self.codebook_size = config["rq_codebook_size"]
        self.lambda_q = config["rq_commitment_weight"]
        self.rq_batch_size = config["rq_batch_size"]
        self.collision_policy = config["collision_policy"]
        self.history_length = config["history_length"]
        self.beam_size, self.max_topk = beam_size_for(config)
        self.generation_batch_size = config["generation_batch_size"]
        self.generation_backend = config["generation_backend"]

        # data: item popularity in training (the collision policy's order)
        _, items = dataset.interaction_pairs()
        self.n_users = dataset.num(self.USER_ID)
        popularity = torch.bincount(items, minlength=self.n_items)
        self.register_buffer("item_popularity", popularity, persistent=False)  # [n_items]

        # define layers: the model's item side, the RQ-VAE on its vectors, the generator
        x_dim = self._build_item_side(config, dataset)
        self.rq_encoder, self.quantizer, self.rq_decoder = rq_vae(
            in_dim=x_dim,
            hidden_sizes=config["rq_hidden_sizes"],
            latent_dim=config["rq_latent_dim"],
            n_levels=self.n_levels,
            codebook_size=self.codebook_size,
            beta=self.lambda_q,
            kmeans_init=config["rq_kmeans_init"],
        )
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
        self.generator = CodeGenerator(
            checkpoint=config["t5_checkpoint"], **self._generator_options(config, sizes), **sizes
        )
        # Item codes [n_items, L], saved with the model; until the tokenizer stage assigns them,
        # each item's id written in base K (unique and valid, so the generator runs from the start).
        self.init_item_codes(
            placeholder_codes(self.n_items, codebook_size=self.codebook_size, n_levels=code_levels)
        )
        self.register_buffer("tokenizer_input", torch.zeros(0), persistent=False)
        self.stage = self.stages[-1]  # every parameter trainable until a trainer picks a stage

    # -- what a model supplies ----------------------------------------------------------------
    def _build_item_side(self, config, dataset) -> int:
        """Build the model's own data and layers; return the width of :meth:`_item_vectors`."""
        raise NotImplementedError

    def _item_vectors(self) -> torch.Tensor:
        """The vector the RQ-VAE tokenises, for every item ``[n_items, x_dim]`` (row 0: padding)."""
        raise NotImplementedError

    def _generator_options(self, config, sizes: dict) -> dict:
        """Keyword arguments of :class:`CodeGenerator` beyond ``sizes``: a T5 of ``t5_layers``."""
        return {"backbone": "t5", "n_layers": config["t5_layers"]}

    def _tokenizer_regulariser(self, z: torch.Tensor) -> torch.Tensor | None:
        """A term added to the tokenizer loss, from the batch's latents ``z`` ``[N, latent]``."""
        return None

    def _stage_modules(self) -> dict[str, tuple]:
        """The modules each stage trains."""
        return {
            "tokenizer": (self.rq_encoder, self.quantizer, self.rq_decoder),
            "generator": (self.generator,),
        }

    # -- stages -------------------------------------------------------------------------------
    def prepare_stage(self, stage: str, train_data=None) -> None:
        if stage == "tokenizer":
            self.tokenizer_input = self._item_vectors().detach()
            if not bool(self.quantizer.initialised):  # k-means on every item, not one batch
                with torch.no_grad():
                    self.quantizer.train()(self.rq_encoder(self.tokenizer_input[1:]))
        elif stage == "generator":  # a resumed generator keeps its codes
            self.ensure_codes()

    # -- RQ-VAE tokenizer (TIGER Sec. 3.1; CEMG Eq. 4) -----------------------------------------
    def _tokenizer_loss(self):
        """Reconstruction + the quantiser's codebook and commitment terms (+ the model's term),
        on ``rq_batch_size`` items drawn at random."""
        if self.tokenizer_input.numel() == 0:
            self.tokenizer_input = self._item_vectors().detach()
        x_all = self.tokenizer_input
        n = min(self.rq_batch_size, self.n_items - 1)
        x = x_all[torch.randperm(self.n_items - 1, device=x_all.device)[:n] + 1]
        z = self.rq_encoder(x)
        quantized, _, quant_loss = self.quantizer(z)
        recon = F.mse_loss(self.rq_decoder(quantized), x)
        extra = self._tokenizer_regulariser(z)
        return recon + quant_loss if extra is None else recon + quant_loss + extra

    @torch.no_grad()
    def _tokenize_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """RQ-VAE codes of every item and the codes after ``collision_policy``, row 0 = -1."""
        x = self._item_vectors()[1:] if self.tokenizer_input.numel() == 0 else None
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

    # -- generation (TIGER Sec. 3.2; CEMG Sec. 3.4) -------------------------------------------
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
        if self.stage == "tokenizer":
            return self._tokenizer_loss()
        if self.stage != "generator":
            raise ValueError(f"{type(self).__name__}: no loss for stage {self.stage!r}")
        prompt, mask = self._prompt(interaction)
        return self.generator.loss(prompt, mask, self._target(interaction[self.POS_ITEM_ID]))

    def predict(self, interaction):
        """Score of the given item: the sum of its codes' log-probabilities ``[B]`` (CEMG Eq. 6)."""
        prompt, mask = self._prompt(interaction)
        target = self._target(interaction[self.ITEM_ID])
        return self.generator.log_likelihood(prompt, mask, target)

    def _generate(self, interaction, masked):
        """Beams ``[B, beam]``, ``generation_batch_size`` prompts at a time.

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
