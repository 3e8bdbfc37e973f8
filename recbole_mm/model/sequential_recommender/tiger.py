"""TIGER: RQ-VAE semantic ids of item content and a T5 that generates the next item's ids.

Reference:
    Shashank Rajput et al. "Recommender Systems with Generative Retrieval." NeurIPS 2023
    (arXiv:2305.05065). Sec. 3.1: an RQ-VAE turns each item's content embedding into a tuple of
    codes (3 levels of 256, latent 32, encoder 512-256-128, k-means-initialised codebooks, beta
    0.25), with a 4th code that makes colliding tuples unique; Sec. 3.2 / 4: a Transformer
    encoder-decoder (4 + 4 layers, d_model 128, 6 heads of 64, MLP 1024, dropout 0.1) reads a
    hashed user-id token and the history's codes and generates the next item's codes by beam
    search.

Two stages, run in order by :class:`recbole_mm.trainer.multistage.MultiStageTrainer`:
``tokenizer`` (the RQ-VAE on the item content) and ``generator`` (T5 on the prompts, validated
with RecBole's full-ranking evaluator through trie-constrained beam search). Everything but the
item vector and the user token is
:class:`~recbole_mm.model.sequential_recommender.semantic_id_sequential.SemanticIdSequentialRecommender`,
which TIGER shares with CEMG: TIGER is CEMG without the collab stage, the fusion, the PCA and the
diversity term, at TIGER's sizes.

Deviations:
    - Content: the dataset's modality in the ``textual`` role (``modality_roles``; ml-100k-mm:
      384-d MiniLM text, amazon-*: its text features), as given, in place of the paper's 768-d
      sentence-T5 embedding of title, price, category and brand. Any one modality can play it
      (``{textual: image}``); several at once are CEMG's "w/o Collab" ablation.
    - The RQ-VAE reads the content centred (less the mean item vector) and scaled to unit
      root-mean-square (``rq_input_norm: center``, a gap-fill; the paper does not say how its
      embeddings enter). Raw MiniLM vectors share one large direction (mean row norm 0.67 of
      1) and vary by 0.04 per dimension: on ml-100k-mm every item then fell on one code tuple
      within 50 steps, under Adagrad at 0.4, 0.05 and 0.01 and AdamW at 1e-3 alike
      (docs/models/TIGER.md); ``none`` feeds them as loaded.
    - The 4th code ranks the items of a colliding tuple by training popularity (the paper's
      order is unstated); beyond 256 items per tuple the run stops with an error.
    - User token: ``hash(user) mod user_hash_buckets`` with a fixed multiplicative hash (the
      paper names the hashing trick, not the hash); ``user_hash_buckets: 0`` drops the token.
    - Optimisation: one ``learner`` for both stages (Adagrad, the paper's RQ-VAE optimiser; the
      paper does not name the Transformer's) at ``stage_learning_rate`` 0.4 and 0.01, its sum of
      squared gradients starting at TensorFlow's 0.1 (``adagrad_initial_accumulator``; from
      PyTorch's 0 the first step at 0.4 made the RQ-VAE diverge), without
      the paper's inverse-square-root decay after 10k steps (RecBole has no scheduler); the
      RQ-VAE draws ``rq_batch_size`` items per training batch rather than running 20k epochs
      over the items; the generator's budget is epochs with early stopping, not 200k steps.
    - The prompt holds the last ``history_length`` (20) items, as LETTER's TIGER; RecBole's
      training rows are every prefix of every training sequence.
    - RecBole's sequential full ranking masks no item, so the search excludes none; beams are
      ``max(topk)`` by default, and a row with fewer generated items is refused, as CEMG's.
"""

from __future__ import annotations

import torch

from recbole_mm.model.checks import one_of, whole
from recbole_mm.model.sequential_recommender.semantic_id_sequential import (
    SemanticIdSequentialRecommender,
)

_HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash (2^32 / golden ratio, odd)


def hash_user_ids(users: torch.Tensor, *, buckets: int) -> torch.Tensor:
    """The hashing trick for user ids: ``((u * 2654435761) mod 2^32) mod buckets``.

    Shapes:
        users: ``[B]`` long (ids below 2^31); returns ``[B]`` long in ``[0, buckets)``.
    """
    return (users.long() * _HASH_MULTIPLIER).remainder(2**32).remainder(buckets)


class TIGER(SemanticIdSequentialRecommender):
    """The item vector is the content of the ``textual`` role (``self.features``, from
    :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender`); no graph, no
    collaborative embedding."""

    content_roles = ("textual",)
    require_content_roles = True
    stages = ("tokenizer", "generator")
    SETTINGS = {
        **SemanticIdSequentialRecommender.SETTINGS,
        "user_hash_buckets": whole(0),
        "t5_d_kv": whole(1, optional=True),
        "rq_input_norm": one_of("center", "none"),
    }

    def _build_item_side(self, config, dataset) -> int:
        # load parameters
        self.user_hash_buckets = config["user_hash_buckets"]
        self.d_kv = config["t5_d_kv"]
        self.input_norm = config["rq_input_norm"]
        if not self.modality_roles:
            raise ValueError(
                f"TIGER tokenises item content, but modality_roles = "
                f"{config['modality_roles']!r} leaves none; map the textual role to a modality "
                f"of dataset '{config['dataset']}' ({list(dataset.modalities)})."
            )
        return self.features.width  # Sec. 3.1: the content embedding itself

    def _item_vectors(self) -> torch.Tensor:
        """The content (Sec. 3.1), centred and scaled to unit RMS over the real items
        (``rq_input_norm: center``); row 0 (padding) is zero."""
        x = self.features.concatenated()  # [n_items, d_content]
        if self.input_norm == "none":
            return x
        real = x[1:] - x[1:].mean(dim=0)
        real = real / real.pow(2).mean().sqrt().clamp(min=1e-12)
        return torch.cat([torch.zeros_like(x[:1]), real])

    def _generator_options(self, config, sizes: dict) -> dict:
        return {
            "backbone": "t5",
            "n_layers": config["t5_layers"],
            "d_kv": self.d_kv,
            "extra_tokens": self.user_hash_buckets,
        }

    def _prompt(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """The hashed user-id token, then the history's code tokens ``[B, 1 + h*L]``."""
        tokens, mask = super()._prompt(interaction)
        if not self.user_hash_buckets:
            return tokens, mask
        bucket = hash_user_ids(interaction[self.USER_ID], buckets=self.user_hash_buckets)
        user = self.generator.extra_token(bucket)[:, None]  # [B, 1]
        return torch.cat([user, tokens], 1), torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
