"""What every semantic-id generative recommender shares (MMGRec, CEMG).

Such a model gives every item a short tuple of codes, its semantic id (TIGER; MMGRec's Rec-ID),
learns to generate the tuple of a user's next item, and ranks by trie-constrained beam search
(MMGRec Sec. 4.4, CEMG Sec. 3.4). :class:`SemanticIdRecommender` is the plumbing around the
model's own parts, a mixin listed before RecBole's base class:
``class MMGRec(SemanticIdRecommender, GeneralRecommender)``,
``class CEMG(SemanticIdRecommender, SequentialRecommender)``.

The model keeps its tokenizer and its loss, its collision policy and its generator's decoding
step; the mixin owns the rest (see the class docstring). The building blocks are in
:mod:`recbole_mm.model.layers.semantic_ids` and :mod:`recbole_mm.model.layers.quantizer`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from recbole_mm.model.abstract_recommender import MultiStageRecommender
from recbole_mm.model.layers.quantizer import collision_report
from recbole_mm.model.layers.semantic_ids import (
    SemanticIdTrie,
    constrained_beam_search,
    ranking_scores,
    reorder_state,
)

logger = logging.getLogger(__name__)


def placeholder_codes(
    n_items: int, *, codebook_size: int, n_levels: int, offset: int = 0
) -> torch.Tensor:
    """Codes for a model whose tokenizer has not run: item ``i`` gets the base-``codebook_size``
    digits of ``i - offset``, most significant first; row 0 (padding) gets ``-1``.

    Unique while ``codebook_size ** n_levels >= n_items - offset``, so an untrained generator
    already decodes to valid items.

    Shapes:
        returns ``[n_items, n_levels]`` long.
    """
    item = torch.arange(n_items)[:, None] - offset
    powers = codebook_size ** torch.arange(n_levels - 1, -1, -1)  # [n_levels]
    codes = (item // powers) % codebook_size
    codes[0] = -1
    return codes


def beam_size_for(config) -> tuple[int, int]:
    """``(beam_size, max(topk))``: ``beam_size: ~`` means ``max(topk)``; a narrower beam would
    leave items of the largest cut-off outside the beams, ranked in RecBole's ``-inf`` tie
    order, so it is refused."""
    topk = config["topk"]
    max_topk = max(topk) if isinstance(topk, (list, tuple)) else int(topk)
    beam_size = config["beam_size"] or max_topk
    if beam_size < max_topk:
        raise ValueError(
            f"beam_size = {beam_size} is below the largest cut-off in topk = {topk}: items "
            f"outside the beams would be ranked arbitrarily. Set beam_size >= {max_topk}, leave "
            "it empty (~) to use max(topk), or drop the larger cut-offs from topk."
        )
    return beam_size, max_topk


def warn_renamed(old: str, new: str) -> None:
    """Warn that ``old`` (the caller's deprecated name) is now ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}.",
        DeprecationWarning,
        stacklevel=3,
    )


class SemanticIdRecommender(MultiStageRecommender):
    """Mixin for a RecBole recommender that ranks by generating semantic ids.

    Owns:
        - ``item_codes``: persistent buffer ``[n_items, L]``, row ``i`` the code tuple of item
          ``i`` (row 0: ``-1``), and ``codes_assigned``: persistent bool buffer, set once
          :meth:`assign_codes` has put the tokenizer's codes in place (a resumed generator
          keeps them, see :meth:`ensure_codes`). Both are created by :meth:`init_item_codes`
          from :func:`placeholder_codes` or the model's own start codes.
        - ``trie``: the :class:`SemanticIdTrie` of ``item_codes``, cached and rebuilt whenever
          the buffer is another tensor or was changed in place (code assignment,
          ``load_state_dict``, a move to another device, a user's edit; not writes through
          ``.data``, which PyTorch does not count).
        - :meth:`assign_codes`: runs the model's tokenizer and collision policy, logs and keeps
          the collision report before and after (``code_report``), writes the buffer, sets the
          flag.
        - :meth:`constrained_search`: the one call of ``constrained_beam_search`` (with the
          model's ``_search_step``), and ``full_sort_predict``: the beams scattered into a
          ``-inf`` ``[B, n_items]`` matrix by ``ranking_scores``, so that RecBole's evaluator
          works unchanged and no item outside the beams counts as a hit.
        - loading checkpoints written under older buffer names (``legacy_state_keys``) or
          before ``codes_assigned`` existed (it loads as ``False``).

    The model sets ``vocab_sizes`` (codes per level), ``codebook_size`` (for the report),
    ``beam_size`` and ``max_topk`` (the largest top-K evaluated), and defines:
        - ``_tokenize_items() -> (codes, unique)``: the tokenizer's codes of every item and the
          same after the model's collision policy (``[n_items, L]``, unique valid rows), both
          with row 0 = -1;
        - ``_search_step(tokens, state) -> (log_probs, state)``, as ``constrained_beam_search``
          calls it, and ``_search_reorder(state, index)`` if its state is not batch-first tensors,
          for a model that ranks through :meth:`constrained_search` (MMGRec; CEMG's
          ``CodeGenerator`` runs the same search with its own step);
        - ``_generate(interaction, masked) -> (items, scores)``: the beams ``full_sort_predict``
          ranks (``[B, beam]``, ``-1`` / ``-inf`` for dropped beams);
        - ``_ranking_mask(interaction)`` if RecBole masks items in the evaluation (general
          models: the user's history); the default ``None`` is right for sequential models.
    """

    legacy_state_keys: dict[str, str] = {}  # old buffer name -> current name

    def set_stage(self, stage: str) -> None:
        """:meth:`MultiStageRecommender.set_stage`; a stage before the last (a tokenizer being
        (re)trained) also marks the codes stale, so that the generator's stage assigns new ones."""
        super().set_stage(stage)
        if stage != self.stages[-1]:
            self.codes_assigned.fill_(False)

    def init_item_codes(self, codes: torch.Tensor) -> None:
        """Register ``item_codes`` (starting at ``codes``) and ``codes_assigned`` (False).

        Call once in ``__init__``, after RecBole's ``__init__``.
        """
        self.register_buffer("item_codes", codes.long())  # [n_items, L], row 0 = -1
        self.register_buffer("codes_assigned", torch.tensor(False))
        self.code_report: dict = {}
        self._trie_cache: tuple | None = None  # (codes tensor, its version, trie)

    # -- codes ---------------------------------------------------------------------------------
    @property
    def trie(self) -> SemanticIdTrie:
        """The trie of the current ``item_codes`` (built on first use after every change)."""
        codes = self.item_codes
        cached = self._trie_cache
        if cached is None or cached[0] is not codes or cached[1] != codes._version:
            trie = SemanticIdTrie(codes, vocab_sizes=self.vocab_sizes)
            self._trie_cache = cached = (codes, codes._version, trie)
        return cached[2]

    @torch.no_grad()
    def assign_codes(self) -> dict:
        """Tokenise every item with the trained tokenizer and resolve collisions (the model's
        ``_tokenize_items``); keep, log and return the collision report before and after."""
        was_training = self.training
        self.eval()
        try:
            codes, unique = self._tokenize_items()
        finally:
            self.train(was_training)
        before = collision_report(codes, codebook_size=self.codebook_size)
        after = collision_report(unique)
        self.item_codes.copy_(unique)
        self.codes_assigned.fill_(True)
        self.code_report = {"before": before, "after": after}
        logger.info(
            "%s item codes: collision rate %.4f (%d items, largest group %d) before resolving "
            "collisions, %.4f after; codebook usage per level %s",
            type(self).__name__,
            before["collision_rate"],
            before["n_colliding_items"],
            before["max_items_per_code"],
            after["collision_rate"],
            [round(u, 3) for u in before["usage_per_level"]],
        )
        return self.code_report

    def ensure_codes(self) -> None:
        """:meth:`assign_codes` unless the codes are assigned (a resumed generator keeps its own;
        a model clears ``codes_assigned`` when its tokenizer trains again)."""
        if not bool(self.codes_assigned):
            self.assign_codes()

    # -- ranking -------------------------------------------------------------------------------
    def _search_reorder(self, state: Any, index: torch.Tensor) -> Any:
        return reorder_state(state, index)

    def constrained_search(
        self,
        state: Any,
        *,
        batch_size: int,
        beam_size: int | None = None,
        excluded: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top ``beam_size`` (default ``self.beam_size``) items per user under ``trie``, by
        ``constrained_beam_search`` with the model's ``_search_step`` from ``state`` (``B`` rows).

        Shapes:
            excluded: bool ``[B, n_items]``; returns ``(items long [B, beam], scores [B, beam])``,
            best first, ``-1`` / ``-inf`` for dropped beams.
        """
        return constrained_beam_search(
            self._search_step,
            self.trie,
            batch_size=batch_size,
            beam_size=beam_size or self.beam_size,
            excluded=excluded,
            state=state,
            reorder=self._search_reorder,
            device=device,
        )

    def _ranking_mask(self, interaction) -> torch.Tensor | None:
        """bool ``[B, n_items]``: what RecBole masks in this evaluation; ``None``: nothing."""
        return None

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Beam scores scattered into a ``-inf`` matrix ``[B, n_items]``.

        ``ranking_scores`` refuses a row whose top ``max_topk`` would reach items the search
        did not score (RecBole would fill it in tie order and count positives among them).
        """
        masked = self._ranking_mask(interaction)
        items, scores = self._generate(interaction, masked)
        return ranking_scores(items, scores, n_items=self.n_items, k=self.max_topk, masked=masked)

    # -- checkpoints ---------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self.legacy_state_keys.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        flag = prefix + "codes_assigned"
        if prefix + "item_codes" in state_dict and flag not in state_dict:
            state_dict[flag] = torch.tensor(False)  # written before the flag existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
