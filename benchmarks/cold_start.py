"""Cold-start evaluation of saved checkpoints (CEMG's RQ5), and held-out targets by item frequency.

Reloads each checkpoint with ``recbole_mm.quick_start.load_data_and_model`` (same config, split
and seed as the run that wrote it) and reports target-level Hit@k / NDCG@k
(``recbole_mm.evaluation.evaluate_cold_start``) on every held-out target, on the targets whose
item has at most ``--max_interactions`` training users, and per ``--buckets`` of training users::

    python benchmarks/cold_start.py <best checkpoint of each run> --max_interactions=5
    python benchmarks/cold_start.py <general checkpoints> --buckets=5,20,50 --split=valid

Works for any model with ``full_sort_predict``: sequential (CEMG, SASRec, GRU4Rec, ...: one
target per row, the figures equal RecBole's) and general (GTC, VBPR, BPR, LightGCN, ...: every
held-out pair is a target, Hit@k is the share of pairs in the user's top k). Writes ``--out``
(JSON) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files written by runs")
    parser.add_argument("--max_interactions", type=int, default=5)
    parser.add_argument("--topk", default="10,20", help="comma-separated cut-offs")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument(
        "--buckets", default="", help="comma-separated upper bounds of training-user buckets"
    )
    parser.add_argument(
        "--labels",
        default="",
        help="comma-separated row labels, one per checkpoint (default: the model's name); "
        "the bucket table pools the checkpoints of one label (mean ± sample std)",
    )
    parser.add_argument("--out", default="benchmark_results/cold_start.json")
    args = parser.parse_args(argv)
    topk = tuple(int(k) for k in args.topk.split(","))
    buckets = tuple(int(b) for b in args.buckets.split(",") if b)
    labels = args.labels.split(",") if args.labels else [None] * len(args.checkpoints)
    if len(labels) != len(args.checkpoints):
        parser.error(f"--labels has {len(labels)} entries for {len(args.checkpoints)} checkpoints")

    import torch

    from recbole_mm.evaluation import evaluate_cold_start
    from recbole_mm.quick_start import load_data_and_model

    rows = []
    for path, label in zip(args.checkpoints, labels):
        config, model, _, train, valid, test = load_data_and_model(path)
        start = time.perf_counter()
        report = evaluate_cold_start(
            model,
            train,
            test if args.split == "test" else valid,
            max_interactions=args.max_interactions,
            topk=topk,
            buckets=buckets,
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "model": label or config["model"],
                "checkpoint": str(path),
                "seconds": seconds,
                **report,
            }
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    keys = [f"{m}@{k}" for k in topk for m in ("hit", "ndcg")]
    print(
        f"| model | rows | {' | '.join(keys)} | cold rows | "
        + " | ".join(f"cold {k}" for k in keys)
        + " |"
    )
    print("|---" * (3 + 2 * len(keys)) + "|")
    for row in rows:
        overall = " | ".join(f"{row['overall'][k]:.4f}" for k in keys)
        cold = " | ".join(f"{row['cold'][k]:.4f}" for k in keys)
        print(f"| {row['model']} | {row['n_overall']} | {overall} | {row['n_cold']} | {cold} |")
    if buckets:
        ranges = [b["range"] for b in rows[0]["buckets"]]
        k = f"hit@{max(topk)}"
        print(f"\n{k} by training users of the target item\n")
        counts = [str(b["n"]) for b in rows[0]["buckets"]]
        print("| model | runs | " + " | ".join(ranges) + " |")
        print("|---" * (2 + len(ranges)) + "|")
        print("| targets (first run) | | " + " | ".join(counts) + " |")
        for label in dict.fromkeys(row["model"] for row in rows):
            group = [row for row in rows if row["model"] == label]
            cells = []
            for index in range(len(ranges)):
                values = torch.tensor([row["buckets"][index][k] for row in group])
                spread = f" ± {values.std():.4f}" if len(values) > 1 else ""
                cells.append(f"{values.mean():.4f}{spread}")
            print(f"| {label} | {len(group)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
