"""Gaussian diffusion building blocks: the noise schedule, the timestep embedding and two samplers.

Reference:
    Jonathan Ho, Ajay Jain, Pieter Abbeel. "Denoising Diffusion Probabilistic Models."
    NeurIPS 2020 (Eq. 4, 6, 7, 11, 12; Algorithm 2).
    Jiaming Song, Chenlin Meng, Stefano Ermon. "Denoising Diffusion Implicit Models."
    ICLR 2021 (Eq. 12, 16).
    Used by GTC (Eq. 3-5), IMECD and DiffuRec-style sequential models.

Conventions:
    Timesteps are 0-based indices ``t = 0 .. n_steps - 1``: index ``t`` is the papers' step
    ``t + 1`` (``x_0`` is the data, ``x_{n_steps}`` is pure noise), as in the DDPM and
    DiffuSeq/DiffuRec code bases. ``alphas_cumprod[t]`` is the papers' ``abar_{t+1}`` and
    ``alphas_cumprod_prev[t]`` is ``abar_t`` (1 at ``t = 0``).

The schedule keeps no state that training changes: its buffers are non-persistent, so a
checkpoint holds only the denoiser's parameters and the schedule is rebuilt from the
configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCHEDULE_KINDS = ("linear", "truncated_linear")
PREDICTIONS = ("eps", "x0")


def beta_schedule(
    *, n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, kind: str = "linear"
) -> Tensor:
    """The betas of a named schedule, float64 ``[n_steps]``.

    ``"linear"``: ``beta_start`` to ``beta_end`` evenly spaced (DDPM; GTC Sec. 4.1).
    ``"truncated_linear"``: DiffuSeq's ``trunc_lin``, the schedule DiffuRec uses: the DDPM
    linear schedule rescaled by ``1000 / n_steps`` and shifted up by 0.01, i.e. evenly spaced
    from ``1000 / n_steps * beta_start + 0.01`` to ``1000 / n_steps * beta_end + 0.01``
    (clipped at 0.999 so that a very short chain stays a valid Markov chain).
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps = {n_steps!r} must be an integer >= 1.")
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"kind = {kind!r} is not a known schedule; use one of {SCHEDULE_KINDS}.")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"beta_start = {beta_start} and beta_end = {beta_end} must satisfy "
            f"0 < beta_start <= beta_end < 1."
        )
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
    scale = 1000.0 / n_steps
    betas = torch.linspace(
        scale * beta_start + 0.01, scale * beta_end + 0.01, n_steps, dtype=torch.float64
    )
    return betas.clamp(max=0.999)


def _gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` shaped to broadcast against ``like`` (``[N, 1, ..., 1]``)."""
    return values[t].reshape(t.shape[0], *([1] * (like.dim() - 1))).to(like.dtype)


class NoiseSchedule(nn.Module):
    """Betas and derived coefficients, computed in float64, stored as float32 non-persistent buffers.

    Forward process ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` (DDPM Eq. 4; GTC
    Eq. 3) and its posterior ``q(x_{t-1} | x_t, x_0)`` (DDPM Eq. 6-7).

    Args:
        n_steps: number of diffusion steps ``T`` (>= 1).
        beta_start, beta_end: first and last beta of the linear ramp.
        kind: ``"linear"`` or ``"truncated_linear"`` (see :func:`beta_schedule`).

    Shapes:
        x0, x_t, noise, eps: ``[N, *]``; t: long ``[N]`` with values in ``[0, n_steps)``.
    """

    def __init__(
        self,
        *,
        n_steps: int,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        kind: str = "linear",
    ) -> None:
        super().__init__()
        betas = beta_schedule(n_steps=n_steps, beta_start=beta_start, beta_end=beta_end, kind=kind)
        self.n_steps = n_steps
        self.kind = kind
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        # DDPM Eq. 7: beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t; it is 0 at t = 0,
        # so its log is clipped to the next value, as in the DDPM code.
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        log_source = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
        if n_steps == 1:
            log_source = betas.clone()
        coefficients = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": alphas_cumprod.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_source.log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev)
            * alphas.sqrt()
            / (1.0 - alphas_cumprod),
        }
        for name, value in coefficients.items():
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"n_steps={self.n_steps}, kind={self.kind!r}, "
            f"beta_start={self.betas[0].item():.3g}, beta_end={self.betas[-1].item():.3g}"
        )

    def _check_t(self, t: Tensor) -> None:
        if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"t must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}.")

    def sample_timesteps(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` timesteps drawn uniformly from ``[0, n_steps)`` (DDPM Algorithm 1), long ``[n]``."""
        return torch.randint(0, self.n_steps, (n,), generator=generator, device=self.betas.device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (DDPM Eq. 4; GTC Eq. 3)."""
        self._check_t(t)
        return (
            _gather(self.sqrt_alphas_cumprod, t, x0) * x0
            + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (Eq. 4 solved for ``x0``)."""
        self._check_t(t)
        return (
            _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)`` (Eq. 4 solved for ``eps``)."""
        self._check_t(t)
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q(x_{t-1} | x_t, x0)`` as ``(mean, variance, log_variance)`` (DDPM Eq. 6-7).

        variance and log_variance are ``[N, 1, ..]`` and broadcast against ``x0``.
        """
        self._check_t(t)
        mean = (
            _gather(self.posterior_mean_coef1, t, x_t) * x0
            + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return (
            mean,
            _gather(self.posterior_variance, t, x_t),
            _gather(self.posterior_log_variance_clipped, t, x_t),
        )


def timestep_embedding(t: Tensor, dim: int, *, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Transformer positional encoding).

    ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k / (dim // 2))``; an odd ``dim``
    gets a trailing zero column.

    Shapes:
        t: ``[N]``; returns float32 ``[N, dim]``.
    """
    if dim < 1:
        raise ValueError(f"dim = {dim} must be >= 1.")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]  # [N, half]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, embedding.new_zeros(t.shape[0], 1)], dim=-1)
    return embedding


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction = {prediction!r} must be one of {PREDICTIONS}.")


def _split_prediction(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: Tensor,
    output: Tensor,
    prediction: str,
    clip_x0: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x0_hat, eps_hat)`` from a denoiser output of either parameterisation.

    With ``clip_x0``, ``x0_hat`` is clamped to ``[-clip_x0, clip_x0]`` and ``eps_hat`` recomputed
    from it (DDPM's ``clip_denoised``).
    """
    if prediction == "eps":
        x0_hat, eps_hat = schedule.predict_x0(x_t, t, output), output
    else:
        x0_hat, eps_hat = output, None
    if clip_x0 is not None:
        bound = torch.as_tensor(clip_x0, dtype=x0_hat.dtype, device=x0_hat.device)
        x0_hat = torch.clamp(x0_hat, -bound, bound)
        eps_hat = None
    if eps_hat is None:
        eps_hat = schedule.predict_eps(x_t, t, x0_hat)
    return x0_hat, eps_hat


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ddpm_sample(
    denoise: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    clip_x0: float | Tensor | None = None,
) -> Tensor:
    """Full ``T``-step ancestral sampling (DDPM Algorithm 2; GTC Eq. 5).

    For ``t = T-1 .. 0``: ``x_{t-1} = mean(x_t, x0_hat) + sigma_t z`` with the posterior mean of
    DDPM Eq. 7, which for an eps prediction equals
    ``1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat)`` (DDPM Eq. 11, GTC Eq. 5), and
    ``sigma_t^2 = beta_tilde_t`` (the posterior variance); no noise is added at the last step.

    Args:
        denoise: ``denoise(x_t, t)`` returns ``eps_hat`` or ``x0_hat`` (``prediction``); the
            caller closes over any conditioning (a lambda or ``functools.partial``).
        schedule: the noise schedule the denoiser was trained with.
        x_T: the starting noise.
        prediction: ``"eps"`` or ``"x0"``.
        generator: source of the per-step noise ``z`` (seed it for reproducible samples).
        clip_x0: clamp every ``x0_hat`` to ``[-clip_x0, clip_x0]`` (a float, or a tensor that
            broadcasts against ``x_T``, e.g. a per-column range); None: no clamping.

    Shapes:
        x_T: ``[N, *]``; returns ``[N, *]``.
    """
    _check_prediction(prediction)
    x = x_T
    for step in reversed(range(schedule.n_steps)):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        x0_hat, _ = _split_prediction(schedule, x, t, denoise(x, t), prediction, clip_x0)
        mean, _, log_variance = schedule.posterior(x0_hat, x, t)
        if step > 0:
            x = mean + torch.exp(0.5 * log_variance) * _randn_like(x, generator)
        else:
            x = mean
    return x


def ddim_timesteps(n_train_steps: int, n_steps: int) -> Tensor:
    """``n_steps`` evenly spaced timesteps of ``[0, n_train_steps)``, descending, starting at
    ``T - 1``: ``round(k T / n) - 1`` for ``k = n .. 1`` (the "trailing" spacing).

    The first call of the sampler is always at the last timestep, where the chain starts, so a
    one-step sampler denoises ``x_T`` at ``t = T - 1`` (and not at ``t = 0``, where the
    denoiser would treat ``x_T`` as almost clean content); ``n_steps = T`` visits every step.
    """
    if not isinstance(n_steps, int) or not 1 <= n_steps <= n_train_steps:
        raise ValueError(
            f"n_steps = {n_steps!r} must be an integer in [1, {n_train_steps}] (the schedule's "
            f"number of steps)."
        )
    k = torch.arange(n_steps, 0, -1, dtype=torch.float64)
    return (k * n_train_steps / n_steps).round().long() - 1


def ddim_sample(
    denoise: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    n_steps: int,
    prediction: str = "eps",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: float | Tensor | None = None,
) -> Tensor:
    """Strided DDIM sampling over ``n_steps`` of the schedule's steps (DDIM Eq. 12, 16).

    With ``tau`` the evenly spaced sub-sequence of timesteps (:func:`ddim_timesteps`), each step
    goes from ``tau_i`` to ``tau_{i+1}`` (``abar`` = 1 after the last):
    ``x' = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma z`` with
    ``sigma = eta sqrt((1 - abar') / (1 - abar) (1 - abar / abar'))``. ``eta = 0`` is
    deterministic given ``x_T``; ``eta = 1`` with ``n_steps = T`` is DDPM ancestral sampling.

    Args:
        denoise, schedule, x_T, prediction, generator, clip_x0: as for :func:`ddpm_sample`.
        n_steps: number of denoiser calls, ``1 <= n_steps <= schedule.n_steps``.
        eta: stochasticity, ``>= 0``.

    Shapes:
        x_T: ``[N, *]``; returns ``[N, *]``.
    """
    _check_prediction(prediction)
    if eta < 0:
        raise ValueError(f"eta = {eta} must be >= 0.")
    steps = ddim_timesteps(schedule.n_steps, n_steps).tolist()
    x = x_T
    abar = schedule.alphas_cumprod
    for i, step in enumerate(steps):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        x0_hat, eps_hat = _split_prediction(schedule, x, t, denoise(x, t), prediction, clip_x0)
        abar_t = abar[step]
        abar_next = abar[steps[i + 1]] if i + 1 < len(steps) else abar.new_ones(())
        sigma = eta * torch.sqrt((1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next))
        direction = torch.sqrt((1 - abar_next - sigma**2).clamp(min=0))
        x = abar_next.sqrt() * x0_hat + direction * eps_hat
        if eta > 0 and i + 1 < len(steps):
            x = x + sigma * _randn_like(x, generator)
    return x


class MLPUNetDenoiser(nn.Module):
    """U-Net-style MLP denoiser ``f(x_t, t, cond)`` for vector data (eps or x0 prediction).

    The input ``[x_t ; cond ; PE(t)]`` (PE: :func:`timestep_embedding` followed by a two-layer
    MLP) goes down ``dim_in -> hidden -> hidden // 2`` and back up ``hidden // 2 -> hidden``;
    the up path's output is concatenated with the first down activation (the skip connection)
    before the output layer ``2 hidden -> dim``.

    Args:
        dim: width of ``x_t`` and of the output.
        cond_dim: width of the conditioning vector (0: unconditional).
        hidden_size: width of the outer layers (``>= 2``).
        time_dim: width of the timestep embedding (default ``dim``).

    Shapes:
        x_t: ``[N, dim]``; t: long ``[N]``; cond: ``[N, cond_dim]``; returns ``[N, dim]``.
    """

    def __init__(
        self, *, dim: int, cond_dim: int, hidden_size: int = 256, time_dim: int | None = None
    ) -> None:
        super().__init__()
        if dim < 1 or cond_dim < 0 or hidden_size < 2:
            raise ValueError(
                f"dim = {dim}, cond_dim = {cond_dim}, hidden_size = {hidden_size}: need dim >= 1, "
                f"cond_dim >= 0 and hidden_size >= 2."
            )
        self.time_dim = time_dim or dim
        self.cond_dim = cond_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(self.time_dim, self.time_dim),
            nn.SiLU(),
            nn.Linear(self.time_dim, self.time_dim),
        )
        self.down1 = nn.Linear(dim + cond_dim + self.time_dim, hidden_size)
        self.down2 = nn.Linear(hidden_size, hidden_size // 2)
        self.up1 = nn.Linear(hidden_size // 2, hidden_size)
        self.out = nn.Linear(2 * hidden_size, dim)
        self.act = nn.SiLU()

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        embedding = self.time_mlp(timestep_embedding(t, self.time_dim).to(x_t.dtype))  # [N, dt]
        parts = [x_t, embedding] if cond is None else [x_t, cond, embedding]
        skip = self.act(self.down1(torch.cat(parts, dim=-1)))  # [N, h]
        return self._up(skip)

    def _up(self, skip: Tensor) -> Tensor:
        h = self.act(self.down2(skip))  # [N, h/2]
        h = self.act(self.up1(h))  # [N, h]
        return self.out(torch.cat([h, skip], dim=-1))  # [N, dim]

    def bind(self, cond: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``denoise(x_t, t)`` for a sampler that calls the network many times with one ``cond``.

        The same function as :meth:`forward` (equal up to the order of float additions), in
        fewer passes over ``[N, hidden]`` tensors (benchmarks/denoiser_profile.py): the first
        layer split by input block, ``cond``'s part computed once and the timestep embedding once
        per distinct ``t`` of a call (a sampler's step has one) instead of once per row, added
        in the product (``addmm``); the output layer split by input block too, so the skip
        connection is never concatenated; activations in place.

        Shapes:
            cond: ``[N, cond_dim]``; the returned function takes ``x_t [N, dim]``, ``t [N]``.
        """
        dim = self.out.out_features
        hidden = self.up1.out_features
        w_x, w_c, w_t = self.down1.weight.split([dim, self.cond_dim, self.time_dim], dim=1)
        base = self.down1.bias if cond is None else F.linear(cond, w_c, self.down1.bias)
        w_up, w_skip = self.out.weight.split([hidden, hidden], dim=1)  # [h ; skip] -> dim

        def denoise(x_t: Tensor, t: Tensor) -> Tensor:
            steps, rows = torch.unique(t, return_inverse=True)  # a sampler step: one value
            embedding = self.time_mlp(timestep_embedding(steps, self.time_dim).to(x_t.dtype))
            time_part = F.linear(embedding, w_t)  # [distinct t, h]
            if steps.numel() > 1:
                time_part = time_part[rows]  # [N, h]
            skip = F.silu(torch.addmm(base + time_part, x_t, w_x.T), inplace=True)  # [N, h]
            h = F.silu(F.linear(skip, self.down2.weight, self.down2.bias), inplace=True)
            h = F.silu(F.linear(h, self.up1.weight, self.up1.bias), inplace=True)  # [N, h]
            return torch.addmm(F.linear(skip, w_skip, self.out.bias), h, w_up.T)  # [N, dim]

        return denoise
