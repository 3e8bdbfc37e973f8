"""Residual vector quantisation (the quantiser of RQ-VAE), k-means and semantic-id collisions.

Reference:
    Doyup Lee et al. "Autoregressive Image Generation using Residual Quantization." CVPR 2022
    (RQ-VAE); used as in TIGER (Rajput et al., NeurIPS 2023), MMGRec (Sec. 4.2.1, Eq. 7-10;
    collisions Sec. 4.2.2, Eq. 11-12) and CEMG (Sec. 3.3, Eq. 4).

The encoder and decoder around the quantiser are :func:`mlp` stacks whose widths the model
chooses; :class:`ResidualQuantizer` only maps a latent vector to a tuple of codes and back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of widths ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, ReLU between them
    (none after the last): an RQ-VAE encoder (``[in, *hidden, latent]``) or decoder.

    Shapes:
        input ``[*, sizes[0]]``; returns ``[*, sizes[-1]]``.
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs an input and an output width, got sizes = {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||x_n - c_k||^2`` for every pair, ``[N, K]`` (expanded form: no ``[N, K, d]`` tensor)."""
    return (
        x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1).unsqueeze(0)
    ).clamp_min_(0)


@torch.no_grad()
def kmeans(
    x: torch.Tensor, k: int, *, n_iter: int = 25, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lloyd's k-means; returns the ``k`` centroids.

    Centroids start at ``k`` distinct random rows (rows drawn with replacement, plus a tiny
    jitter, when ``x`` has fewer than ``k`` rows). A cluster that empties is re-seeded with the
    row farthest from its current centroid, so every centroid stays in use when ``N >= k``.

    Args:
        x: the points; float, any device (the computation stays there).
        k: number of centroids (>= 1).
        n_iter: Lloyd iterations (assignment + mean update).
        generator: random source for the initial rows (on ``x``'s device, or CPU).

    Shapes:
        x: ``[N, d]``; returns ``[k, d]`` with ``x``'s dtype and device.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, d] matrix, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"kmeans: k = {k} must be >= 1")
    n = x.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    points = x.detach().float()
    if n >= k:
        start = torch.randperm(n, generator=generator, device=gen_device)[:k].to(x.device)
        centroids = points[start].clone()
    else:
        # Every row once, then random repeats separated by a tiny jitter.
        extra = torch.randint(n, (k - n,), generator=generator, device=gen_device).to(x.device)
        noise = torch.randn((k - n, points.shape[1]), generator=generator, device=gen_device)
        scale = points.std(unbiased=False).clamp_min(1e-6) * 1e-3
        centroids = torch.cat([points, points[extra] + scale * noise.to(x.device)])
    for _ in range(n_iter):
        distances = _squared_distances(points, centroids)  # [N, k]
        assign = distances.argmin(1)  # [N]
        counts = torch.bincount(assign, minlength=k)  # [k]
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)  # [k, d]
        updated = sums / counts.clamp_min(1).unsqueeze(1)
        empty = counts == 0
        if empty.any() and n >= k:
            # Re-seed empty clusters with the points worst served by their centroid.
            worst = distances.gather(1, assign.unsqueeze(1)).squeeze(1)  # [N]
            far = worst.topk(int(empty.sum())).indices
            updated[empty] = points[far]
        else:
            updated[empty] = centroids[empty]
        centroids = updated
    return centroids.to(x.dtype)


class ResidualQuantizer(nn.Module):
    """Residual quantiser: ``n_levels`` codebooks, each quantising what the previous left over.

    Level ``m`` picks ``c_m = argmin_k ||r_m - e_{m,k}||^2`` (Eq. 7 of MMGRec) with
    ``r_1 = x`` and ``r_{m+1} = r_m - e_{m,c_m}``; the quantised vector is ``sum_m e_{m,c_m}``
    (Eq. 9), returned with a straight-through gradient ``x + sg(x_hat - x)``. The loss is the
    codebook and commitment terms of Eq. 10, ``sum_m ||sg(r_m) - e||^2 + beta ||r_m - sg(e)||^2``,
    each squared norm averaged over rows and dimensions (as TIGER's and LETTER's code do).

    With ``kmeans_init`` (TIGER, CEMG) the first forward pass in training mode sets each level's
    codebook to the k-means centroids of that level's residuals on that batch, level by level;
    the flag ``initialised`` is a persistent buffer, so a reloaded quantiser is not re-initialised.
    Without it, codebooks start uniform in ``[-1/K, 1/K]`` (MMGRec's code).

    Args:
        n_levels: number of codebooks (code tuple length).
        codebook_size: codes per level ``K``.
        dim: latent dimension ``d``.
        beta: commitment weight (0.25 in MMGRec and TIGER).
        kmeans_init: initialise the codebooks by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.

    Shapes:
        x: ``[N, d]``; quantized ``[N, d]``; codes ``[N, n_levels]`` long; loss ``[]``.
    """

    def __init__(
        self,
        *,
        n_levels: int,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 25,
    ) -> None:
        super().__init__()
        for key, value in (("n_levels", n_levels), ("codebook_size", codebook_size), ("dim", dim)):
            if value < 1:
                raise ValueError(f"ResidualQuantizer: {key} = {value} must be >= 1")
        if beta < 0:
            raise ValueError(f"ResidualQuantizer: beta = {beta} must be >= 0")
        self.n_levels = n_levels
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        bound = 1.0 / codebook_size
        self.codebooks = nn.Parameter(
            torch.empty(n_levels, codebook_size, dim).uniform_(-bound, bound)
        )
        self.register_buffer("initialised", torch.tensor(not kmeans_init))

    def extra_repr(self) -> str:
        return (
            f"n_levels={self.n_levels}, codebook_size={self.codebook_size}, dim={self.dim}, "
            f"beta={self.beta}, kmeans_init={self.kmeans_init}"
        )

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
        """Set each level's codebook to k-means centroids of that level's residuals of ``x``.

        Under ``torch.distributed`` every rank takes rank 0's codebooks, so replicas agree.
        """
        residual = x.detach().to(self.codebooks.dtype)
        for level in range(self.n_levels):
            centroids = kmeans(
                residual, self.codebook_size, n_iter=self.kmeans_iters, generator=generator
            )
            self.codebooks.data[level] = centroids
            codes = _squared_distances(residual, centroids).argmin(1)
            residual = residual - centroids[codes]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(self.codebooks.data, src=0)
        self.initialised.fill_(True)

    def _quantize(self, x: torch.Tensor):
        """Codes ``[N, L]``, chosen vectors ``[L, N, d]`` and residuals ``[L, N, d]``."""
        residual = x
        codes, chosen, residuals = [], [], []
        for level in range(self.n_levels):
            book = self.codebooks[level]  # [K, d]
            code = _squared_distances(residual.detach(), book.detach()).argmin(1)  # Eq. 7, [N]
            vector = book[code]  # [N, d]
            residuals.append(residual)
            codes.append(code)
            chosen.append(vector)
            residual = residual - vector.detach()  # r_{m+1} = r_m - e_{m, c_m}
        return torch.stack(codes, 1), torch.stack(chosen), torch.stack(residuals)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"ResidualQuantizer expects [N, {self.dim}] inputs, got {tuple(x.shape)}"
            )
        if self.training and not bool(self.initialised):
            self.init_codebooks(x)
        codes, chosen, residuals = self._quantize(x)
        # Eq. 10: codebook term moves e towards sg(r), commitment term moves r towards sg(e).
        loss = x.new_zeros(())
        for level in range(self.n_levels):
            r, e = residuals[level], chosen[level]
            loss = loss + F.mse_loss(e, r.detach()) + self.beta * F.mse_loss(r, e.detach())
        quantized = chosen.sum(0)  # Eq. 9, x_hat = sum_m e_{m, c_m}
        quantized = x + (quantized - x).detach()  # straight-through estimator
        return quantized, codes, loss

    @torch.no_grad()
    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """The residual entering each level, ``[n_levels, N, d]``."""
        return self._quantize(x)[2]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, n_levels]`` (long) of ``x`` ``[N, d]``."""
        return self._quantize(x)[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The sum of the chosen code vectors, ``[N, d]``, for codes ``[N, n_levels]``."""
        if codes.dim() != 2 or codes.shape[1] != self.n_levels:
            raise ValueError(f"decode expects codes [N, {self.n_levels}], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"decode: codes must lie in [0, {self.codebook_size}), got "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        levels = torch.arange(self.n_levels, device=codes.device)
        return self.codebooks[levels, codes].sum(1)  # [N, L, d] -> [N, d]


def _group_rows(codes: torch.Tensor) -> torch.Tensor:
    """Group id of each row: rows with equal code tuples share one id. ``[N]`` long."""
    return torch.unique(codes, dim=0, return_inverse=True)[1]


def collision_report(codes: torch.Tensor, *, codebook_size: int | None = None) -> dict:
    """How far code tuples fail to identify items.

    Rows holding a negative code (padding / invalid items) are ignored.

    Args:
        codes: the items' code tuples.
        codebook_size: codes per level, for ``usage_per_level`` (default: largest code + 1).

    Returns:
        ``collision_rate``: fraction of items whose tuple another item shares (MMGRec, Sec. 6);
        ``n_colliding_items``; ``max_items_per_code``: the largest group sharing one tuple;
        ``usage_per_level``: fraction of each level's codes that some item uses.

    Shapes:
        codes: ``[N, L]`` long.
    """
    if codes.dim() != 2:
        raise ValueError(f"collision_report expects codes [N, L], got {tuple(codes.shape)}")
    valid = codes[(codes >= 0).all(1)]
    if valid.shape[0] == 0:
        return {
            "collision_rate": 0.0,
            "n_colliding_items": 0,
            "max_items_per_code": 0,
            "usage_per_level": [0.0] * codes.shape[1],
        }
    size = int(codebook_size if codebook_size is not None else valid.max() + 1)
    group = _group_rows(valid)
    group_size = torch.bincount(group)[group]  # [N] size of each row's group
    colliding = int((group_size > 1).sum())
    usage = [torch.unique(valid[:, level]).numel() / size for level in range(valid.shape[1])]
    return {
        "collision_rate": colliding / valid.shape[0],
        "n_colliding_items": colliding,
        "max_items_per_code": int(group_size.max()),
        "usage_per_level": usage,
    }


def append_collision_index(
    codes: torch.Tensor, *, order: torch.Tensor | None = None
) -> torch.Tensor:
    """Append a level that makes every code tuple unique (MMGRec Eq. 11-12, TIGER).

    The new code of an item is its rank (0-based) among the items sharing its tuple, ranked by
    ``order`` (higher first, e.g. popularity: MMGRec's popularity token) with ties and
    ``order=None`` broken by row index (TIGER's extra token). Rows holding a negative code
    (padding / invalid items) get ``-1``.

    Shapes:
        codes: ``[N, L]`` long; order: ``[N]``; returns ``[N, L + 1]`` long.
    """
    if codes.dim() != 2:
        raise ValueError(f"append_collision_index expects codes [N, L], got {tuple(codes.shape)}")
    n = codes.shape[0]
    if order is not None and order.shape != (n,):
        raise ValueError(f"order must have shape [{n}], got {tuple(order.shape)}")
    extra = torch.full((n, 1), -1, dtype=torch.long, device=codes.device)
    valid = (codes >= 0).all(1)
    rows = valid.nonzero().squeeze(1)  # [V] ascending row index
    if rows.numel():
        group = _group_rows(codes[rows])  # [V]
        # Stable sorts, least significant key first: row index, then -order, then group.
        perm = torch.arange(rows.numel(), device=codes.device)
        if order is not None:
            perm = perm[torch.sort(-order[rows].double(), stable=True).indices]
        perm = perm[torch.sort(group[perm], stable=True).indices]
        sorted_group = group[perm]
        position = torch.arange(rows.numel(), device=codes.device)
        is_start = torch.ones_like(sorted_group, dtype=torch.bool)
        is_start[1:] = sorted_group[1:] != sorted_group[:-1]
        group_start = torch.cummax(torch.where(is_start, position, 0), 0).values
        rank = torch.empty_like(position)
        rank[perm] = position - group_start
        extra[rows, 0] = rank
    return torch.cat([codes.long(), extra], 1)


class CodeSpaceFull(ValueError):
    """No free code tuple is left to resolve a collision."""


def _nearest_codes(codebook: torch.Tensor, vector: torch.Tensor) -> list[int]:
    return torch.argsort((codebook - vector).pow(2).sum(1)).tolist()


def reassign_last_level(
    codes: torch.Tensor, residuals: torch.Tensor, codebooks: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Resolve collisions on the last level: in each group of items sharing every code, the
    first item by ``order`` (higher first) keeps its codes and each other one takes the
    last-level code nearest to its last residual that no item under the same prefix holds.
    When every last-level code under that prefix is taken, the second-to-last code moves to
    the next nearest one with a free last-level code. (LETTER resolves collisions on the last
    level; TIGER's alternative is :func:`append_collision_index`.)

    Shapes:
        codes: ``[N, M]``; residuals: ``[M, N, d]`` (entering each level);
        codebooks: ``[M, K, d]``; order: ``[N]``; returns ``[N, M]``.

    Raises:
        CodeSpaceFull: no free code tuple is left near an item.
    """
    codes = codes.clone()
    used: dict[tuple, set] = {}
    for row in codes.tolist():
        used.setdefault(tuple(row[:-1]), set()).add(row[-1])
    kept = set()
    for row in torch.argsort(-order.double(), stable=True).tolist():
        key = tuple(codes[row].tolist())
        if key not in kept:
            kept.add(key)
            continue
        options = [(key[:-1], residuals[-1, row])]
        if codes.shape[1] > 1:
            r = residuals[-2, row]
            options += [
                (key[:-2] + (c,), r - codebooks[-2, c])
                for c in _nearest_codes(codebooks[-2], r)
                if c != key[-2]
            ]
        for prefix, residual in options:
            taken = used.setdefault(prefix, set())
            free = [c for c in _nearest_codes(codebooks[-1], residual) if c not in taken]
            if free:
                taken.add(free[0])
                codes[row] = torch.tensor([*prefix, free[0]])
                break
        else:
            raise CodeSpaceFull(
                f"no free code tuple near item row {row}: the last two levels are full. Append a "
                "collision level instead, or use a larger codebook."
            )
    return codes


def rq_vae(
    *,
    in_dim: int,
    hidden_sizes: Sequence[int],
    latent_dim: int,
    n_levels: int,
    codebook_size: int,
    beta: float,
    kmeans_init: bool,
) -> tuple[nn.Sequential, ResidualQuantizer, nn.Sequential]:
    """The parts of an RQ-VAE (TIGER Sec. 3.1; MMGRec Eq. 6-9; CEMG Eq. 4), built in this
    order, so their parameters are drawn in it: the MLP encoder ``in -> *hidden -> latent``,
    the :class:`ResidualQuantizer` and the mirrored decoder ``latent -> *reversed(hidden) -> in``.

    Returns:
        ``(encoder, quantizer, decoder)``.
    """
    hidden = list(hidden_sizes)
    encoder = mlp([in_dim, *hidden, latent_dim])
    quantizer = ResidualQuantizer(
        n_levels=n_levels,
        codebook_size=codebook_size,
        dim=latent_dim,
        beta=beta,
        kmeans_init=kmeans_init,
    )
    decoder = mlp([latent_dim, *hidden[::-1], in_dim])
    return encoder, quantizer, decoder
