"""Throughput of trie-constrained beam search (users per second) on a synthetic catalogue.

The step function is trivial (fixed log-probabilities looked up by the last token), so the
figure measures the search itself: trie lookups, exclusion, top-k and state reordering.

    python benchmarks/beam_search.py                       # 20k items, 3 x 128 + collision level
    python benchmarks/beam_search.py --device cuda --batch 1024
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from recbole_mm.model.layers.quantizer import append_collision_index, collision_report
from recbole_mm.model.layers.semantic_ids import SemanticIdTrie, constrained_beam_search


def synthetic_trie(
    n_items: int, levels: int, codebook: int, seed: int, device: str, dense_limit: int = 1 << 22
):
    """Random codes (clustered, so collisions occur) plus a collision level; item 0 = padding."""
    g = torch.Generator().manual_seed(seed)
    # Skewed code usage, as trained tokenizers produce: collisions happen.
    weights = torch.rand(codebook, generator=g) ** 3
    codes = torch.multinomial(weights, n_items * levels, replacement=True, generator=g)
    codes = codes.reshape(n_items, levels)
    codes[0] = -1
    popularity = torch.rand(n_items, generator=g)
    codes = append_collision_index(codes, order=popularity)
    report = collision_report(codes[:, :levels], codebook_size=codebook)
    vocab = [codebook] * levels + [int(codes[:, -1].max()) + 1]
    start = time.perf_counter()
    trie = SemanticIdTrie(codes.to(device), vocab_sizes=vocab, dense_limit=dense_limit)
    report["trie_build_ms"] = round(1000 * (time.perf_counter() - start), 1)
    return trie, vocab, report


class TableStep:
    """log p(token | last token) from fixed random tables; the state is the user index."""

    def __init__(self, vocab: list[int], device: str, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        previous = [1] + vocab[:-1]
        self.tables = [
            torch.log_softmax(torch.randn(p, v, generator=g), 1).to(device)
            for p, v in zip(previous, vocab)
        ]

    def __call__(self, tokens: torch.Tensor, state):
        if tokens.shape[1]:
            last = tokens[:, -1]
        else:
            last = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        return self.tables[tokens.shape[1]][last], state


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--levels", type=int, default=3, help="semantic levels (plus collision)")
    parser.add_argument("--codebook", type=int, default=128)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256, help="users per search")
    parser.add_argument("--excluded", type=int, default=50, help="training items per user")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dense-limit", type=int, default=1 << 22, help="SemanticIdTrie dense_limit (0: sorted)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (this process)")
    parser.add_argument("--out", default="benchmark_results/beam_search.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = args.device
    trie, vocab, report = synthetic_trie(
        args.items, args.levels, args.codebook, args.seed, device, args.dense_limit
    )
    step = TableStep(vocab, device, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    excluded = torch.zeros(args.batch, args.items, dtype=torch.bool)
    history = torch.randint(1, args.items, (args.batch, args.excluded), generator=g)
    excluded.scatter_(1, history, True)
    excluded = excluded.to(device)
    state = torch.arange(args.batch, device=device)

    def search(with_exclusion: bool):
        return constrained_beam_search(
            step,
            trie,
            batch_size=args.batch,
            beam_size=args.beam,
            excluded=excluded if with_exclusion else None,
            state=state,
            device=device,
        )

    results = {
        "items": args.items,
        "vocab_sizes": vocab,
        "collision_rate_before_index": report["collision_rate"],
        "trie_build_ms": report["trie_build_ms"],
        "beam": args.beam,
        "batch": args.batch,
        "device": device,
        "dense_limit": args.dense_limit,
        "threads": torch.get_num_threads(),
    }
    for with_exclusion in (False, True):
        search(with_exclusion)  # warm-up (and table copy to the device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.repeats):
            items, _ = search(with_exclusion)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.repeats
        cpu_seconds = (time.process_time() - cpu_start) / args.repeats
        key = "with_exclusion" if with_exclusion else "no_exclusion"
        results[key] = {
            "ms_per_batch": round(1000 * seconds, 2),
            "users_per_second": round(args.batch / seconds, 1),
            # CPU time of this process (all its threads): less sensitive to other load.
            "cpu_ms_per_batch": round(1000 * cpu_seconds, 2),
            "dropped_beams": int((items < 0).sum()),
        }
        if with_exclusion:
            hit = excluded.gather(1, items.clamp_min(0)) & (items >= 0)
            assert not hit.any(), "an excluded item was returned"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
