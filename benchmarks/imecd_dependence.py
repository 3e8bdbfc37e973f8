"""How much IMECD's reverse process depends on ``x_t``: is the diffusion doing anything?

Each variant (IMECD with its own settings) is trained for ``--epochs`` epochs on the same data
and split, then measured on the first validation batch, in eval mode, per branch ``m``:

(a) ``zero``: relative change of ``x0_hat = f(x_T, T - 1, s~)`` when ``x_T`` is replaced by 0;
(b) ``noise x10``: the same when ``x_T`` is multiplied by 10;
    (relative L2 change ``||x0_hat' - x0_hat|| / ||x0_hat||``, mean over users, in %)
(c) ``seeds``: top-``k`` overlap of the ``T``-step chain (Eq. 16-18) under two evaluation seeds;
(d) ``1 vs T``: top-``k`` overlap of one denoiser pass and the ``T``-step chain, same seed;
    (overlap: ``|top-k(a) & top-k(b)| / k``, mean over users, after RecBole's masking of the
    history)

plus validation NDCG@``k`` with the variant's own evaluation and the seconds that pass took. A
denoiser that ignores ``x_t`` shows (a), (b) near 0 % and (c), (d) near 1: the reverse chain
then reduces to one deterministic pass. Prints a table; ``--out`` keeps the figures (JSON)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/imecd_dependence.py --dataset=ml-100k-mm \\
        --common="--hidden_size=32 --inner_size=128 --MAX_ITEM_LIST_LENGTH=10" --epochs=3

A variant is a label followed by its settings (``--key=value``); the default variants are the
paper's method (``properties/model/IMECD.yaml``) and the gap-fill shipped before issue 21
(``OLD_GAP_FILL``).
"""

from __future__ import annotations

import argparse
import shlex
import time

import torch

from recbole_mm.config import parse_overrides
from recbole_mm.experiments.results import pipe_table, write_output
from recbole_mm.quick_start import build, prepare

# The defaults before issue 21 (commit 4e5135d): DiffuRec's lambda with its jitter, no L_r
# (stop-gradient when it is on), one denoiser pass at evaluation.
OLD_GAP_FILL = (
    "--diffusion_lambda=0.001 --diffusion_lambda_jitter=True --lambda_r=0 "
    "--rec_stop_gradient=True --diffusion_eval_steps=1"
)
DEFAULT_VARIANTS = ("paper", f"old {OLD_GAP_FILL}")


def _variant(text: str, common: dict) -> tuple[str, dict]:
    words = shlex.split(text)
    if not words or words[0].startswith("--"):
        raise SystemExit(f"--variant={text!r} must start with a label (e.g. 'paper')")
    return words[0], {**common, **parse_overrides(words[1:])}


def _masked_scores(model, batch, *, eval_steps: int, seed: int) -> torch.Tensor:
    """Full-sort scores ``[B, n_items]`` as RecBole's evaluator ranks them (padding item and
    history masked), under ``eval_steps`` reverse steps and evaluation seed ``seed``."""
    interaction, history_index, _, _ = batch
    saved = model.eval_steps, model.eval_seed
    model.eval_steps, model.eval_seed = eval_steps, seed
    model.eval()  # re-seeds the evaluation generator
    with torch.no_grad():
        scores = model.full_sort_predict(interaction.to(model.device)).view(-1, model.n_items)
    model.eval_steps, model.eval_seed = saved
    model.eval()
    scores[:, 0] = -torch.inf
    if history_index is not None:
        scores[history_index] = -torch.inf
    return scores


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Mean over rows of ``|top-k(a) & top-k(b)| / k``; ``a``, ``b``: scores ``[B, n]``."""
    top_a, top_b = a.topk(k, dim=-1).indices, b.topk(k, dim=-1).indices  # [B, k]
    shared = (top_a.unsqueeze(-1) == top_b.unsqueeze(-2)).any(-1).sum(-1)  # [B]
    return shared.float().mean().item() / k


def sensitivity(model, batch, *, seed: int) -> dict[str, dict[str, float]]:
    """Per branch: relative L2 change of ``x0_hat`` at ``t = T - 1`` when ``x_T`` is zeroed
    (``zero``) or multiplied by 10 (``noise_x10``), mean over the batch's users."""
    interaction = batch[0].to(model.device)
    model.eval()
    generator = torch.Generator(device=model.device).manual_seed(seed)
    out = {}
    with torch.no_grad():
        reps = model.item_representations()
        conds, attn_mask = model.forward(
            interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], reps
        )
        for m in model.branches:
            n = conds[m].shape[0]
            x = torch.randn(n, model.hidden_size, generator=generator, device=model.device)
            t = torch.full((n,), model.schedule.n_steps - 1, device=model.device)
            base = model.denoisers[m](x, t, conds[m], attn_mask)  # [B, d]

            def change(x_other, base=base, m=m, t=t):
                moved = model.denoisers[m](x_other, t, conds[m], attn_mask)
                return ((moved - base).norm(dim=-1) / base.norm(dim=-1)).mean().item()

            out[m] = {"zero": change(torch.zeros_like(x)), "noise_x10": change(10 * x)}
    return out


def measure(dataset: str, label: str, settings: dict, *, epochs: int, k: int) -> dict:
    """Train one variant for ``epochs`` epochs and measure (a)-(d) on its first validation batch."""
    config, _, train_data, valid_data, _ = prepare("IMECD", dataset, overrides=settings)
    model, trainer = build(config, train_data)
    train_seconds = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        train_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - start
    metric = f"ndcg@{k}"

    batch = next(iter(valid_data))
    seed, n_steps = int(config["seed"]), model.schedule.n_steps
    chain = _masked_scores(model, batch, eval_steps=n_steps, seed=seed)
    branches = sensitivity(model, batch, seed=seed)
    return {
        "label": label,
        "settings": {key: value for key, value in settings.items()},
        "epochs": epochs,
        "n_users": int(chain.shape[0]),
        "branches": branches,
        "zero": sum(b["zero"] for b in branches.values()) / len(branches),
        "noise_x10": sum(b["noise_x10"] for b in branches.values()) / len(branches),
        "seed_overlap": topk_overlap(
            chain, _masked_scores(model, batch, eval_steps=n_steps, seed=seed + 1), k
        ),
        "one_vs_T_overlap": topk_overlap(
            chain, _masked_scores(model, batch, eval_steps=1, seed=seed), k
        ),
        "eval_steps": model.eval_steps,
        "valid_metric": metric,
        "valid_score": result.get(metric),
        "train_s_per_epoch": sum(train_seconds) / max(len(train_seconds), 1),
        "eval_s": eval_seconds,
    }


def table(rows: list[dict], *, k: int) -> str:
    header = [
        "variant",
        "x0_hat change, x_T zeroed (%)",
        "x0_hat change, noise x10 (%)",
        f"top-{k} overlap, 2 eval seeds",
        f"top-{k} overlap, 1 vs T steps",
        f"valid ndcg@{k} (own eval)",
        "eval steps",
        "s per validation",
    ]

    def per_branch(row, key):
        parts = " / ".join(f"{b[key] * 100:.2f}" for b in row["branches"].values())
        return f"{row[key] * 100:.2f} ({parts})"

    body = [
        [
            row["label"],
            per_branch(row, "zero"),
            per_branch(row, "noise_x10"),
            f"{row['seed_overlap']:.3f}",
            f"{row['one_vs_T_overlap']:.3f}",
            "-" if row["valid_score"] is None else f"{row['valid_score']:.4f}",
            row["eval_steps"],
            f"{row['eval_s']:.1f}",
        ]
        for row in rows
    ]
    return pipe_table(header, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--common", default="", help="settings for every variant, '--k=v ...'")
    parser.add_argument("--variant", action="append", help="'label --k=v ...' (repeatable)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="benchmark_results/imecd_dependence.json")
    args = parser.parse_args(argv)

    common = {
        "seed": args.seed,
        "show_progress": False,
        "metrics": ["NDCG"],
        "topk": [args.k],
        "valid_metric": f"NDCG@{args.k}",
    }
    common.update(parse_overrides(shlex.split(args.common)))
    rows = []
    for text in args.variant or DEFAULT_VARIANTS:
        label, settings = _variant(text, common)
        rows.append(measure(args.dataset, label, settings, epochs=args.epochs, k=args.k))
    print(f"branches in the parentheses: {' / '.join(rows[0]['branches'])}")
    print(table(rows, k=args.k))
    write_output(args.out, {"dataset": args.dataset, "common": args.common, "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
