"""Where one step of GTC's reverse process spends its time, at a given number of nodes.

GTC's evaluation (the paper's Eq. 5) runs ``T`` denoiser calls per modality over every user and
item. This script times, for ``--nodes`` rows of width ``--dim`` and the denoiser's
``--hidden`` width (GTC's defaults: 64 and 128), one call of each part of a DDPM step as the
evaluation runs it (``MLPUNetDenoiser.bind``, no autograd): the denoiser, its four matrix
products alone, the x0 estimate, the posterior and the step's Gaussian noise; then a whole
``--steps``-step DDPM chain, and the achieved GFLOP/s of the products. It prints one table.

    OMP_NUM_THREADS=1 python benchmarks/denoiser_profile.py --nodes 15543   # tiktok-dev
    OMP_NUM_THREADS=1 python benchmarks/denoiser_profile.py --nodes 2626    # ml-100k-mm
    OMP_NUM_THREADS=1 python benchmarks/denoiser_profile.py --nodes 53955   # Amazon-Sports
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from recbole_mm.model.layers.diffusion import (
    MLPUNetDenoiser,
    NoiseSchedule,
    _split_prediction,
    ddpm_sample,
)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=15543)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="DDPM steps of the timed chain")
    parser.add_argument("--T", type=int, default=500, help="diffusion steps of the schedule")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n, d, h = args.nodes, args.dim, args.hidden
    denoiser = MLPUNetDenoiser(dim=d, cond_dim=d, hidden_size=h).eval()
    schedule = NoiseSchedule(n_steps=args.T, beta_start=1e-4, beta_end=0.02)
    cond, x = torch.randn(n, d), torch.randn(n, d)
    t = torch.full((n,), args.T // 2, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    # the four products of a call: x -> h, h -> h/2, h/2 -> h, [h ; skip] -> d
    shapes = [(d, h), (h, h // 2), (h // 2, h), (2 * h, d)]
    inputs = [torch.randn(n, a) for a, _ in shapes]
    weights = [torch.randn(b, a) for a, b in shapes]
    flops = 2 * n * sum(a * b for a, b in shapes)
    rows = {}
    with torch.no_grad():
        denoise = denoiser.bind(cond)
        rows["denoiser call (bind)"] = timed(lambda: denoise(x, t), args.repeats)
        rows["  its 4 matrix products"] = timed(
            lambda: [F.linear(a, w) for a, w in zip(inputs, weights)], args.repeats
        )
        rows["x0 estimate (eps form)"] = timed(
            lambda: _split_prediction(schedule, x, t, x, "eps", None), args.repeats
        )
        rows["posterior mean and variance"] = timed(
            lambda: schedule.posterior(x, x, t), args.repeats
        )
        rows["step noise (randn)"] = timed(
            lambda: torch.randn(x.shape, generator=generator), args.repeats
        )
        short = NoiseSchedule(n_steps=args.steps, beta_start=1e-4, beta_end=0.02)
        chain = timed(lambda: ddpm_sample(denoise, short, x, generator=generator), 3)
    per_step = chain / args.steps
    gflops = flops / rows["  its 4 matrix products"] / 1e9
    print(f"{n} nodes, d = {d}, hidden = {h}, {torch.get_num_threads()} thread(s)\n")
    print("| part | ms per call |\n|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds * 1e3:.2f} |")
    print(f"| one DDPM step ({args.steps}-step chain / {args.steps}) | {per_step * 1e3:.2f} |")
    print(
        f"\nproducts: {flops / 1e9:.2f} GFLOP per call, {gflops:.1f} GFLOP/s; "
        f"a {args.T}-step chain per modality: {per_step * args.T:.1f} s"
    )
    return {"rows": rows, "per_step_s": per_step, "gflops": gflops}


if __name__ == "__main__":
    main()
