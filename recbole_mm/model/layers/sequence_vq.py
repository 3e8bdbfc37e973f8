"""Sequence-shaped vector quantisation by Gumbel-softmax selection and an EM codebook.

IMECD's MS-VQ (Eq. 7-10), after DiQDiff: each code vector has the shape of a whole sequence
representation ``[L, d]``; an MLP over the flattened sequence scores the ``Z`` codes; a hard
Gumbel-softmax picks one code in the forward pass while its soft relaxation carries the gradient
to the MLP (straight-through); the codebook is not trained by gradients but moved towards the
mean of the sequences that chose each code (the M step of an EM / k-means iteration).

Reference: IMECD, Eq. 7-10; DiQDiff (WWW'25) for the sequence-shaped codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def assignment_means(x: Tensor, codes: Tensor, n_codes: int) -> tuple[Tensor, Tensor]:
    """Eq. 10: per code, the mean of the rows of ``x`` assigned to it, and the counts.

    Shapes:
        x: ``[B, *S]``, codes: long ``[B]`` -> ``([n_codes, *S] means, [n_codes] counts)``;
        the mean of a code no row chose is zeros (its count is 0).
    """
    flat = x.reshape(x.shape[0], -1)
    sums = torch.zeros(n_codes, flat.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, codes, flat)
    counts = torch.bincount(codes, minlength=n_codes).to(x.dtype)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return means.reshape(n_codes, *x.shape[1:]), counts


class SequenceQuantizer(nn.Module):
    r"""Pick one of ``Z`` sequence-shaped codes per sequence and return it (Eq. 7-8).

    Training (``self.training``): logits ``o = MLP(flatten(s))`` (Eq. 7); a Gumbel-softmax with
    temperature ``tau`` (Eq. 8) whose forward value is the one-hot of its argmax and whose
    gradient is that of the soft sample; the selected code is ``onehot @ C``. Then, if
    ``update`` is true, the codebook moves towards the per-code means of the batch (Eq. 10):
    ``c_z <- (1 - r) c_z + r mean(S_z)`` for every code chosen at least once; codes no sequence
    chose keep their value. ``r = update_rate = 1`` is the paper's rule (the batch mean replaces
    the code); ``r < 1`` is an exponential moving average over batches. Before the first update
    the codebook is initialised with ``Z`` sequences drawn from that first training batch.

    Evaluation: the code with the largest logit (no Gumbel noise), no codebook update.

    Args:
        seq_len: ``L``, positions per sequence (and per code).
        dim: ``d``, size of each position.
        n_codes: ``Z``.
        tau: Gumbel-softmax temperature.
        hidden: hidden width of the selection MLP (``None``: ``dim``).
        update_rate: ``r`` in (0, 1].

    Shapes:
        s: ``[B, L, d]`` -> ``(quantized [B, L, d], codes long [B])``.
    """

    def __init__(
        self,
        *,
        seq_len: int,
        dim: int,
        n_codes: int,
        tau: float = 0.1,
        hidden: int | None = None,
        update_rate: float = 1.0,
    ):
        super().__init__()
        if n_codes < 1:
            raise ValueError(f"n_codes = {n_codes} must be at least 1.")
        if tau <= 0:
            raise ValueError(f"tau = {tau} must be positive.")
        if not 0.0 < update_rate <= 1.0:
            raise ValueError(f"update_rate = {update_rate} must be in (0, 1].")
        self.seq_len, self.dim, self.n_codes = seq_len, dim, n_codes
        self.tau, self.update_rate = tau, update_rate
        hidden = hidden or dim
        # Eq. 7: the code-selection MLP over the flattened sequence.
        self.selector = nn.Sequential(
            nn.Linear(seq_len * dim, hidden), nn.GELU(), nn.Linear(hidden, n_codes)
        )
        # C^m: trained by Eq. 10, not by gradients; saved with the model.
        self.register_buffer("codebook", torch.zeros(n_codes, seq_len, dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return (
            f"seq_len={self.seq_len}, dim={self.dim}, n_codes={self.n_codes}, tau={self.tau}, "
            f"update_rate={self.update_rate}"
        )

    def logits(self, s: Tensor) -> Tensor:
        """Eq. 7: ``[B, L, d]`` -> ``[B, Z]``."""
        return self.selector(s.flatten(1))

    def select(self, logits: Tensor) -> Tensor:
        """Eq. 8: one-hot ``[B, Z]`` selection (straight-through Gumbel-softmax when training)."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True)
        return F.one_hot(logits.argmax(-1), self.n_codes).to(logits.dtype)

    def forward(self, s: Tensor, *, update: bool = True) -> tuple[Tensor, Tensor]:
        if s.dim() != 3 or s.shape[1:] != (self.seq_len, self.dim):
            raise ValueError(
                f"SequenceQuantizer expects [B, {self.seq_len}, {self.dim}], got {tuple(s.shape)}."
            )
        if self.training and update and not bool(self.initialised):
            self._init_from(s.detach())
        onehot = self.select(self.logits(s))  # [B, Z], hard forward, soft gradient
        codes = onehot.argmax(-1)  # [B]
        # The clone keeps the codebook that autograd saved apart from the update below.
        quantized = torch.einsum("bz,zld->bld", onehot, self.codebook.clone())  # [B, L, d]
        if self.training and update:
            self.em_update(s.detach(), codes)
        return quantized, codes

    @torch.no_grad()
    def em_update(self, s: Tensor, codes: Tensor) -> None:
        """Eq. 10 (with rate ``r``): move every chosen code towards its sequences' mean."""
        means, counts = assignment_means(s, codes, self.n_codes)
        chosen = counts > 0
        rate = self.update_rate
        self.codebook[chosen] = (1 - rate) * self.codebook[chosen] + rate * means[chosen]

    @torch.no_grad()
    def _init_from(self, s: Tensor) -> None:
        # Z sequences of the first batch (with replacement when the batch is smaller than Z).
        replace = s.shape[0] < self.n_codes
        if replace:
            rows = torch.randint(s.shape[0], (self.n_codes,), device=s.device)
        else:
            rows = torch.randperm(s.shape[0], device=s.device)[: self.n_codes]
        self.codebook.copy_(s[rows])
        self.initialised.fill_(True)
