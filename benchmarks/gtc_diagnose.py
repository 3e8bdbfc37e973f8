"""Train GTC once and say whether its diffusion branch generates the content it was given.

    python benchmarks/gtc_diagnose.py --epochs=20 --seed=2020 \
        '--config={"gtc_prediction": "eps", "gtc_standardize": false}'

Trains GTC on a dataset (default ml-100k-mm, RecBole's split) with RecBole's trainer, selects the
best validation epoch, tests it, then prints one JSON line with the test metrics and, per content
modality, how the generated representations ``C_bar_0`` (evaluation sampler, seeded) compare with
the encoder's ``C_0``: the mean row cosine, the ratio of mean row norms, and the mean row norms of
``C_0`` and of ``S``. A denoiser that learnt nothing gives a cosine near 0; one that reproduces
the content, near 1. It also gives the mean row norm of the fused content ``C_f`` and the
correlation of GTC's user-item scores with the scores of ``S`` alone (1: the content changes
nothing; 0: the content decides the ranking). docs/models/GTC.md reports these figures.

    python benchmarks/gtc_diagnose.py --checkpoint=saved/GTC-<time>.pth

reports the same figures for a saved model (e.g. a benchmark run's best checkpoint) without
training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from recbole_mm.quick_start import build, prepare


@torch.no_grad()
def generation_report(model) -> dict:
    """Per content modality: cos(C_bar_0, C_0), norm ratio, ||C_0||, ||S|| (row means)."""
    model.eval()
    s, contents, views = model.evaluation_views()
    report = {}
    for name, c0, view in zip(model.modalities, contents, views):
        report[name] = {
            "cos_generated_content": round(float(F.cosine_similarity(view, c0, -1).mean()), 4),
            "norm_ratio": round(float(view.norm(dim=-1).mean() / c0.norm(dim=-1).mean()), 4),
            "content_norm": round(float(c0.norm(dim=-1).mean()), 4),
            "interaction_norm": round(float(s.norm(dim=-1).mean()), 4),
        }
    if views and model.fusion == "gate":
        fused, users, items = (
            model._fuse(s, views),
            slice(0, model.n_users),
            slice(model.n_users + 1, None),
        )
        scores = (fused[users] @ fused[items].T).flatten()
        interaction_scores = (s[users] @ s[items].T).flatten()
        report["fused"] = {
            "c_f_norm": round(float((fused - s)[model.n_users + 1 :].norm(dim=-1).mean()), 4),
            "score_corr_with_s": round(
                float(torch.corrcoef(torch.stack([scores, interaction_scores]))[0, 1]), 4
            ),
        }
    return report


def report_checkpoint(path: str) -> dict:
    """The generation report of a saved GTC, with its configuration's seed and settings."""
    from recbole_mm.quick_start import load_data_and_model

    config, model, *_ = load_data_and_model(path)
    return {"checkpoint": path, "seed": config["seed"], "generation": generation_report(model)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--config", default="{}", help="JSON object of GTC settings")
    parser.add_argument("--checkpoint", default=None, help="report a saved GTC, no training")
    args = parser.parse_args(argv)
    if args.checkpoint:
        print(json.dumps(report_checkpoint(args.checkpoint)))
        return
    settings = json.loads(args.config)
    with tempfile.TemporaryDirectory() as checkpoints:
        config, _, train, valid, test = prepare(
            "GTC",
            args.dataset,
            None,
            {
                "epochs": args.epochs,
                "seed": args.seed,
                "eval_step": 1,
                "show_progress": False,
                "state": "WARNING",
                "checkpoint_dir": checkpoints,
                **settings,
            },
            overrides={},
        )
        model, trainer = build(config, train)
        started = time.perf_counter()
        best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False)
        train_s = time.perf_counter() - started
        result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    print(
        json.dumps(
            {
                "settings": settings,
                "seed": args.seed,
                "best_valid": round(float(best_valid), 4),
                "test": {k: round(float(v), 4) for k, v in result.items()},
                "train_s": round(train_s, 1),
                "generation": generation_report(model),
            }
        )
    )


if __name__ == "__main__":
    main()
