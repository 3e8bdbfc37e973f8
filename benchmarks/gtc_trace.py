"""Trace GTC epoch by epoch: validation score, the scale of S against the content and generated
views, the fusion gate, and the generated views' agreement with the content.

    python benchmarks/gtc_trace.py --dataset=tiktok-dev --data_path=dataset --epochs=6 \
        '--config={"gtc_tc_weight": 0.1}'

Trains with a plain Adam loop over RecBole's training loader (no early stopping: a short,
fixed budget for comparing settings on validation) and prints one JSON line per epoch:
``valid`` (RecBole's validation score), row-mean norms of ``S``, of each ``C_0`` and generated
view, of ``C_f``, the mean gate ``alpha`` of Eq. 10 and its learnt temperature and offset, and
per modality the mean cosine between generated view and content (benchmarks/gtc_diagnose.py).
docs/models/GTC.md reports the traces that chose the defaults.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from gtc_diagnose import generation_report

from recbole_mm.quick_start import build, prepare


@torch.no_grad()
def gate_report(model) -> dict:
    """Norm of ``C_f`` and the mean Eq. 10 gate over all nodes (evaluation views)."""
    model.eval()
    s, _, views = model.evaluation_views()
    if not views:
        return {}
    c_f = views[0]
    for view in views[1:]:
        c_f = c_f * view
    report = {"c_f_norm": round(float(c_f.norm(dim=-1).mean()), 4)}
    if model.fusion_gate == "two_way":
        cosine = F.cosine_similarity(s, c_f, dim=-1)
        tau = model.log_fusion_temperature.exp()
        alpha = torch.sigmoid(cosine / tau - model.fusion_offset)
        report.update(alpha=alpha.mean(), tau=tau, offset=model.fusion_offset)
    else:  # Eq. 10 as printed: the softmax over one option is 1
        report.update(alpha=1.0)
    return {k: round(float(v), 4) for k, v in report.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--config", default="{}", help="JSON object of GTC settings")
    args = parser.parse_args(argv)
    settings = json.loads(args.config)
    extra = {"data_path": args.data_path} if args.data_path else {}
    config, _, train, valid, _ = prepare(
        "GTC",
        args.dataset,
        None,
        {"seed": args.seed, "show_progress": False, "state": "WARNING", **extra, **settings},
        overrides={},
    )
    model, trainer = build(config, train)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    for epoch in range(args.epochs):
        model.train()
        for batch in train:
            optimizer.zero_grad()
            model.calculate_loss(batch.to(model.device)).backward()
            optimizer.step()
        score, _ = trainer._valid_epoch(valid, show_progress=False)
        row = {"settings": settings, "epoch": epoch, "valid": round(float(score), 4)}
        row.update(gate_report(model))
        row["generation"] = generation_report(model)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
