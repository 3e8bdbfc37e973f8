"""Noise schedule, timestep embedding and samplers of recbole_mm.model.layers.diffusion."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.model.layers.diffusion import (
    MLPUNetDenoiser,
    NoiseSchedule,
    beta_schedule,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    timestep_embedding,
)


def _reference(betas: list[float]) -> dict[str, list[float]]:
    """Float64 coefficients computed term by term with the math module."""
    out = {k: [] for k in ("abar", "abar_prev", "post_var", "coef1", "coef2")}
    abar = 1.0
    for beta in betas:
        prev = abar
        abar *= 1.0 - beta
        out["abar"].append(abar)
        out["abar_prev"].append(prev)
        out["post_var"].append(beta * (1.0 - prev) / (1.0 - abar))
        out["coef1"].append(beta * math.sqrt(prev) / (1.0 - abar))
        out["coef2"].append((1.0 - prev) * math.sqrt(1.0 - beta) / (1.0 - abar))
    return out


@pytest.mark.parametrize("kind", ["linear", "truncated_linear"])
@pytest.mark.parametrize("n_steps", [1, 7, 500])
def test_coefficients_match_float64_reference(kind, n_steps):
    schedule = NoiseSchedule(n_steps=n_steps, beta_start=1e-4, beta_end=0.02, kind=kind)
    if kind == "linear":
        step = (0.02 - 1e-4) / max(n_steps - 1, 1)
        betas = [1e-4 + i * step for i in range(n_steps)]
    else:  # DiffuSeq's trunc_lin: rescaled by 1000 / T and shifted by 0.01
        scale = 1000.0 / n_steps
        lo, hi = scale * 1e-4 + 0.01, scale * 0.02 + 0.01
        betas = [min(lo + i * (hi - lo) / max(n_steps - 1, 1), 0.999) for i in range(n_steps)]
    ref = _reference(betas)
    tol = {"rtol": 1e-6, "atol": 1e-9}
    checks = {
        "betas": betas,
        "alphas_cumprod": ref["abar"],
        "alphas_cumprod_prev": ref["abar_prev"],
        "sqrt_alphas_cumprod": [math.sqrt(a) for a in ref["abar"]],
        "sqrt_one_minus_alphas_cumprod": [math.sqrt(1 - a) for a in ref["abar"]],
        "posterior_variance": ref["post_var"],
        "posterior_mean_coef1": ref["coef1"],
        "posterior_mean_coef2": ref["coef2"],
    }
    for name, expected in checks.items():
        got = getattr(schedule, name)
        assert got.dtype == torch.float32 and got.shape == (n_steps,), name
        torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), **tol)


def test_truncated_linear_is_diffurec_schedule_at_t32():
    betas = beta_schedule(n_steps=32, kind="truncated_linear")
    assert betas[0].item() == pytest.approx(1000 / 32 * 1e-4 + 0.01)
    assert betas[-1].item() == pytest.approx(1000 / 32 * 0.02 + 0.01)


def test_buffers_are_not_saved():
    schedule = NoiseSchedule(n_steps=10)
    assert schedule.state_dict() == {}
    assert "betas" in dict(schedule.named_buffers())


def test_q_sample_and_inversions_round_trip():
    schedule = NoiseSchedule(n_steps=50)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    t = torch.tensor([0, 1, 10, 25, 48, 49])
    x_t = schedule.q_sample(x0, t, noise)
    torch.testing.assert_close(schedule.predict_x0(x_t, t, noise), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(schedule.predict_eps(x_t, t, x0), noise, rtol=1e-4, atol=1e-4)
    # Posterior mean with the true x0 is the DDPM Eq. 11 mean with the true eps.
    mean, var, _ = schedule.posterior(x0, x_t, t)
    beta = schedule.betas[t][:, None]
    eq11 = (x_t - beta / schedule.sqrt_one_minus_alphas_cumprod[t][:, None] * noise) / (
        schedule.alphas[t][:, None].sqrt()
    )
    torch.testing.assert_close(mean, eq11, rtol=1e-4, atol=1e-5)
    assert var.shape == (6, 1) and var[0].item() == 0.0


def test_timestep_embedding():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(emb[1, 0], torch.cos(torch.tensor(1.0)))
    assert timestep_embedding(t, 7).shape == (3, 7)


def _toy_denoiser(x, t):
    return 0.3 * x + 0.001 * t.float()[:, None]


def test_ddpm_golden_value():
    schedule = NoiseSchedule(n_steps=20)
    x_T = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    out = ddpm_sample(_toy_denoiser, schedule, x_T, generator=torch.Generator().manual_seed(1))
    golden = torch.tensor(GOLDEN_DDPM)
    torch.testing.assert_close(out, golden, rtol=1e-4, atol=1e-5)
    again = ddpm_sample(_toy_denoiser, schedule, x_T, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_ddim_with_eta_one_and_all_steps_is_ddpm():
    schedule = NoiseSchedule(n_steps=30)
    x_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    for prediction in ("eps", "x0"):
        a = ddpm_sample(
            _toy_denoiser,
            schedule,
            x_T,
            prediction=prediction,
            generator=torch.Generator().manual_seed(3),
        )
        b = ddim_sample(
            _toy_denoiser,
            schedule,
            x_T,
            n_steps=30,
            eta=1.0,
            prediction=prediction,
            generator=torch.Generator().manual_seed(3),
        )
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_samplers_recover_a_point_mass_with_the_oracle_denoiser():
    # With the exact eps of a point mass at c, both samplers must land on c.
    schedule = NoiseSchedule(n_steps=100)
    c = torch.tensor([[1.5, -2.0, 0.5]])

    def oracle_eps(x, t):
        return schedule.predict_eps(x, t, c.expand_as(x))

    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    for out in (
        ddpm_sample(oracle_eps, schedule, x_T, generator=g),
        ddim_sample(oracle_eps, schedule, x_T, n_steps=10),
        ddim_sample(lambda x, t: c.expand_as(x), schedule, x_T, n_steps=7, prediction="x0"),
    ):
        torch.testing.assert_close(out, c.expand_as(out), rtol=1e-3, atol=1e-3)


def test_mlp_unet_denoiser_shapes_and_gradients():
    torch.manual_seed(0)
    net = MLPUNetDenoiser(dim=4, cond_dim=3, hidden_size=8)
    x, cond, t = torch.randn(5, 4), torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 99])
    out = net(x, t, cond)
    assert out.shape == (5, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    # The output depends on the condition and on the timestep.
    assert not torch.allclose(net(x, t, cond), net(x, t, cond + 1))
    assert not torch.allclose(net(x, t, cond), net(x, t + 1, cond))
    assert MLPUNetDenoiser(dim=4, cond_dim=0, hidden_size=8)(x, t).shape == (5, 4)


@pytest.mark.parametrize("cond_dim", [0, 5])
def test_bound_denoiser_is_the_same_function(cond_dim):
    """bind(cond) splits the first layer by input block and embeds each distinct t once: the
    outputs equal forward's, for a sampler's uniform t and for mixed t."""
    torch.manual_seed(0)
    net = MLPUNetDenoiser(dim=4, cond_dim=cond_dim, hidden_size=8)
    x = torch.randn(7, 4)
    cond = torch.randn(7, cond_dim) if cond_dim else None
    bound = net.bind(cond)
    for t in (torch.full((7,), 3), torch.tensor([0, 5, 5, 2, 9, 0, 1])):
        torch.testing.assert_close(bound(x, t), net(x, t, cond), rtol=1e-5, atol=1e-6)
    # A full DDPM chain through either gives the same sample.
    schedule = NoiseSchedule(n_steps=20)
    start = torch.randn(7, 4)
    samples = [
        ddpm_sample(f, schedule, start, generator=torch.Generator().manual_seed(1))
        for f in (bound, lambda x_t, t: net(x_t, t, cond))
    ]
    torch.testing.assert_close(samples[0], samples[1], rtol=1e-5, atol=1e-5)


def test_clip_x0_bounds_the_prediction():
    schedule = NoiseSchedule(n_steps=50)
    x_T = 5 * torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    wild = ddim_sample(lambda x, t: -x, schedule, x_T, n_steps=1)
    assert wild.abs().max() > 10
    for sampler in (ddim_sample, ddpm_sample):
        kwargs = {"n_steps": 3} if sampler is ddim_sample else {}
        out = sampler(
            lambda x, t: -x, schedule, x_T, clip_x0=torch.tensor([0.5, 1.0, 2.0]), **kwargs
        )
        assert (out.abs() <= torch.tensor([0.5, 1.0, 2.0]) + 1e-5).all()


def test_one_step_ddim_denoises_at_the_last_timestep():
    schedule = NoiseSchedule(n_steps=50)
    seen = []

    def denoise(x, t):
        seen.append(t.unique().tolist())
        return torch.zeros_like(x)

    ddim_sample(denoise, schedule, torch.randn(3, 2), n_steps=1, prediction="x0")
    assert seen == [[49]]


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 4).tolist() == [999, 749, 499, 249]
    assert ddim_timesteps(5, 5).tolist() == [4, 3, 2, 1, 0]
    # A one-step sampler starts where the chain starts, at t = T - 1, not at t = 0.
    assert ddim_timesteps(5, 1).tolist() == [4]
    assert ddim_timesteps(500, 1).tolist() == [499]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: NoiseSchedule(n_steps=0), "n_steps = 0"),
        (lambda: NoiseSchedule(n_steps=5, kind="cosine"), "kind = 'cosine'"),
        (lambda: NoiseSchedule(n_steps=5, beta_start=0.1, beta_end=0.01), "beta_start"),
        (lambda: ddim_timesteps(10, 11), "n_steps = 11"),
        (
            lambda: ddpm_sample(
                _toy_denoiser, NoiseSchedule(n_steps=2), torch.zeros(1, 2), prediction="v"
            ),
            "prediction = 'v'",
        ),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# Frozen output of the seeded loop above (T = 20, linear schedule, eps prediction).
GOLDEN_DDPM = [
    [0.73168004, -0.37729621, -1.62906456],
    [0.08962997, -0.84041655, -1.43873668],
]
