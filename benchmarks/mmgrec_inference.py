"""MMGRec's RQ4: per-user inference time of constrained beam search against full-sort scoring.

MMGRec (Sec. 4.5, 6.4) argues that generating Rec-IDs costs about the same whatever the number
of items, while MF / LightGCN score every item (``O(I D)``) and sort. This script times both on
synthetic item sets of growing size (the paper uses 1/16 ... 1/1 of Kwai's 86,483 items, and
this script can go beyond), with random weights: the cost of inference does not depend on what
the weights learned.

- MMGRec: the model class itself (``MMGRec.generate``: encoder over the user's ``history_length``
  items, trie-constrained beam search with cached decoder states, ``beam`` beams), on random
  Rec-IDs (3 levels x 128 codes + popularity token, as Sec. 5.3). Two variants: training items
  excluded inside the trie (``exclude_history=True``, the default, which costs a ``[B, I]``
  availability table per batch) and no exclusion (over-generation: RecBole masks afterwards).
- MF / LightGCN: ``U @ V^T`` over all items, training items set to ``-inf``, ``topk``; at
  inference LightGCN is MF over its precomputed propagated embeddings (as the paper notes), so
  one timing stands for both.

Times are wall-clock per user, in batches of ``--batch-size`` users and, for a subset, one user
at a time. Usage:

    python benchmarks/mmgrec_inference.py --n-items 86483 --multiples 2,4,8

Writes ``results.json``, ``results.md`` and ``inference_time.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_mm.data.adjacency import ADJACENCY_NORMS  # noqa: E402
from recbole_mm.model.general_recommender.mmgrec import MMGRec  # noqa: E402
from recbole_mm.model.layers.quantizer import append_collision_index  # noqa: E402


class SyntheticDataset:
    """The few dataset facts MMGRec's constructor reads, for ``n_items`` synthetic items."""

    def __init__(self, *, n_users: int, n_items: int, history: torch.Tensor, feature_dim: int):
        self._num = {"user_id": n_users, "item_id": n_items}
        self.modalities = ("text",)
        self._features = torch.randn(n_items, feature_dim)
        self._features[0] = 0
        self._history = history  # [n_users, H], row 0 (padding user) zeros
        users = torch.arange(n_users).repeat_interleave(history.shape[1])
        keep = history.reshape(-1) > 0
        self.inter_feat = {"user_id": users[keep], "item_id": history.reshape(-1)[keep]}

    def num(self, field: str) -> int:
        return self._num[field]

    def modality_features(self, name: str) -> torch.Tensor:
        return self._features

    def normalized_adjacency(self, norm: str = "symmetric") -> torch.Tensor:
        users, items = self.inter_feat["user_id"], self.inter_feat["item_id"]
        n_users, n_items = self._num["user_id"], self._num["item_id"]
        return ADJACENCY_NORMS[norm](users, items, n_users=n_users, n_items=n_items)

    def history_item_matrix(self):
        return self._history, None, None


def model_config(args) -> dict:
    config = yaml.safe_load((REPO / "properties" / "model" / "MMGRec.yaml").read_text())
    config.update(
        USER_ID_FIELD="user_id",
        ITEM_ID_FIELD="item_id",
        NEG_PREFIX="neg_",
        device=torch.device("cpu"),
        dataset="synthetic",
        modalities=None,
        topk=[args.topk],
        beam_size=args.beam,
        embedding_size=args.dim,
    )
    return config


def random_rec_ids(n_items: int, *, levels: int, codebook: int, generator) -> torch.Tensor:
    codes = torch.randint(codebook, (n_items, levels), generator=generator)
    codes[0] = -1
    return append_collision_index(codes, order=torch.rand(n_items, generator=generator))


def timed(fn, batches) -> float:
    """Seconds for ``fn`` over every batch (after one warm-up call)."""
    fn(batches[0])
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return time.perf_counter() - start


def measure(n_items: int, args, generator) -> dict:
    n_users = args.users + 1
    history = torch.randint(1, n_items + 1, (n_users, args.history), generator=generator)
    history[0] = 0
    dataset = SyntheticDataset(n_users=n_users, n_items=n_items + 1, history=history, feature_dim=8)
    model = MMGRec(model_config(args), dataset).eval()
    config = model_config(args)
    rec_ids = random_rec_ids(
        n_items + 1,
        levels=config["rq_levels"],
        codebook=config["rq_codebook_size"],
        generator=generator,
    )
    with torch.no_grad():
        model.item_codes.copy_(rec_ids)
        model.user_vectors.normal_()
    start = time.perf_counter()
    model.trie.to(model.item_codes.device)  # the trie is built on first use after a change
    trie_s = time.perf_counter() - start

    users = torch.arange(1, n_users)
    batches = list(users.split(args.batch_size))
    singles = list(users[: args.single_users].split(1))
    user_emb = torch.randn(n_users, args.dim)
    item_emb = torch.randn(n_items + 1, args.dim)

    def full_sort(batch):
        scores = user_emb[batch] @ item_emb.T  # [B, I]
        scores[:, 0] = float("-inf")
        scores.scatter_(1, history[batch], float("-inf"))
        return scores.topk(args.topk, dim=1)

    def generative(batch):
        return model.generate(batch)

    row = {"n_items": n_items, "trie_build_s": trie_s}
    with torch.no_grad():
        for label, exclude in (("mmgrec_excluded", True), ("mmgrec_overgenerate", False)):
            model.exclude_history = exclude
            row[f"{label}_ms"] = 1000 * timed(generative, batches) / len(users)
            row[f"{label}_single_ms"] = 1000 * timed(generative, singles) / len(singles)
        row["full_sort_ms"] = 1000 * timed(full_sort, batches) / len(users)
        row["full_sort_single_ms"] = 1000 * timed(full_sort, singles) / len(singles)
        model.exclude_history = True
        items, _ = model.generate(batches[0])
        row["excluded_items_returned"] = int(
            (items.unsqueeze(2) == history[batches[0]].unsqueeze(1)).any(2).sum()
        )
    return row


def sizes(args) -> list[tuple[str, int]]:
    out = []
    for text in args.fractions.split(","):
        fraction = Fraction(text)
        out.append((str(fraction), max(1, int(args.n_items * fraction))))
    for text in filter(None, args.multiples.split(",")):
        out.append((f"{int(text)}", args.n_items * int(text)))
    return out


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Per-user inference time (ms), {args.users} users in batches of {args.batch_size} and "
        f"{args.single_users} users one at a time; top-{args.topk}, {args.beam} beams, D = "
        f"{args.dim}, {args.history} training items per user; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}.",
        "",
        "| items | scale | MF/LightGCN full sort | MMGRec, exclusion in trie | MMGRec, no exclusion "
        "| MF/LightGCN, 1 user | MMGRec excl., 1 user | MMGRec no excl., 1 user | trie build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n_items']:,} | {row['scale']} | {row['full_sort_ms']:.3f} | "
            f"{row['mmgrec_excluded_ms']:.3f} | {row['mmgrec_overgenerate_ms']:.3f} | "
            f"{row['full_sort_single_ms']:.3f} | {row['mmgrec_excluded_single_ms']:.3f} | "
            f"{row['mmgrec_overgenerate_single_ms']:.3f} | {row['trie_build_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_items"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, suffix, title in ((axes[0], "ms", "batched users"), (axes[1], "single_ms", "one user")):
        ax.plot(n, [r[f"full_sort_{suffix}"] for r in rows], "o-", label="MF / LightGCN full sort")
        ax.plot(
            n,
            [r[f"mmgrec_excluded_{suffix}"] for r in rows],
            "s-",
            label="MMGRec, exclusion in trie",
        )
        ax.plot(
            n,
            [r[f"mmgrec_overgenerate_{suffix}"] for r in rows],
            "^-",
            label="MMGRec, no exclusion",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of items")
        ax.set_ylabel("ms per user")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=86483, help="the full item count (Kwai)")
    parser.add_argument("--fractions", default="1/16,1/8,1/4,1/2,1", help="scales of --n-items")
    parser.add_argument("--multiples", default="", help="larger scales, e.g. 2,4,8")
    parser.add_argument("--users", type=int, default=256, help="users timed in batches")
    parser.add_argument("--batch-size", type=int, default=64, help="users per batch")
    parser.add_argument("--single-users", type=int, default=16, help="users timed one at a time")
    parser.add_argument("--history", type=int, default=32, help="training items per user")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--beam", type=int, default=10, help="beams (>= topk)")
    parser.add_argument("--dim", type=int, default=64, help="D")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process (default 1: on a shared CPU, more threads than "
        "free cores make small operations wait on each other and the timings meaningless)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmark_results" / "mmgrec_inference")
    args = parser.parse_args(argv)
    if args.beam < args.topk:
        parser.error(f"--beam {args.beam} must be >= --topk {args.topk}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for scale, n_items in sizes(args):
        row = {"scale": scale, **measure(n_items, args, generator)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(
            json.dumps({"args": vars(args), "rows": rows}, default=str, indent=1)
        )
    report = markdown(rows, args)
    (args.out / "results.md").write_text(report)
    plot(rows, args.out / "inference_time.png")
    print(report)
    print(f"wrote {args.out}/results.json, results.md, inference_time.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
