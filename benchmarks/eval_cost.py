"""Cost of one full-ranking validation pass, several models side by side in one process.

Every variant is built on the same dataset and split (untrained weights: the cost of a pass does
not depend on them; a multi-stage model is put in its last stage, its item codes assigned by
its untrained tokenizer), and RecBole's ``Trainer.evaluate`` runs on the validation data in
``--rounds`` interleaved rounds (variant 1, 2, ..., then again), so that a change in the
machine's load hits every variant alike. Prints the median seconds of each variant and its
ratio to the first one, and writes them to ``--out`` (JSON)::

    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --dataset=ml-100k-mm --protocol=loo \\
        --common="--hidden_size=32 --MAX_ITEM_LIST_LENGTH=10" \\
        --variant="SASRec" \\
        --variant="CEMG --generation_backend=hf --t5_d_model=32 --t5_layers=1" \\
        --variant="CEMG --generation_backend=shared --t5_d_model=32 --t5_layers=1"

A variant is a model name followed by its own settings (``--key=value``, as on the command
line); ``--common`` settings apply to every variant, a variant's own win.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import time

from recbole_mm.benchmark import PROTOCOL_EVAL_ARGS
from recbole_mm.config import parse_overrides
from recbole_mm.experiments.results import pipe_table, write_output
from recbole_mm.quick_start import build, prepare


def _variant(text: str, common: dict) -> tuple[str, dict]:
    words = shlex.split(text)
    if not words or words[0].startswith("--"):
        raise SystemExit(f"--variant={text!r} must start with a model name (e.g. 'SASRec')")
    return words[0], {**common, **parse_overrides(words[1:])}


def _ready(model, train_data):
    """The model as its evaluation sees it: last stage (codes assigned), eval mode."""
    stages = getattr(model, "stages", ())
    if stages:
        model.set_stage(stages[-1])
        if hasattr(model, "prepare_stage"):
            model.prepare_stage(stages[-1], train_data)
    return model.eval()


def measure(dataset: str, variants: list[tuple[str, dict]], *, rounds: int) -> list[dict]:
    """Median seconds of one validation pass of each ``(model, settings)`` variant.

    Returns one dict per variant: ``seconds`` (every round), ``median_s`` and ``ratio`` (to the
    first variant's median).
    """
    runs = []
    for name, settings in variants:
        config, _, train_data, valid_data, _ = prepare(name, dataset, overrides=settings)
        model, trainer = build(config, train_data)
        _ready(model, train_data)
        trainer.evaluate(valid_data, load_best_model=False, show_progress=False)  # warm-up
        runs.append({"trainer": trainer, "data": valid_data, "seconds": []})
    for _ in range(rounds):
        for run in runs:
            start = time.perf_counter()
            run["trainer"].evaluate(run["data"], load_best_model=False, show_progress=False)
            run["seconds"].append(time.perf_counter() - start)
    base = statistics.median(runs[0]["seconds"])
    return [
        {
            "seconds": run["seconds"],
            "median_s": statistics.median(run["seconds"]),
            "ratio": statistics.median(run["seconds"]) / base,
        }
        for run in runs
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--protocol", default="dataset", choices=("dataset", *PROTOCOL_EVAL_ARGS))
    parser.add_argument("--common", default="", help="settings for every variant, '--k=v ...'")
    parser.add_argument("--variant", action="append", required=True, help="'Model --k=v ...'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="benchmark_results/eval_cost.json")
    args = parser.parse_args(argv)

    common = {"seed": args.seed, "show_progress": False}
    if args.protocol != "dataset":
        common["eval_args"] = PROTOCOL_EVAL_ARGS[args.protocol]
    common.update(parse_overrides(shlex.split(args.common)))
    rows = measure(
        args.dataset, [_variant(text, common) for text in args.variant], rounds=args.rounds
    )
    for text, row in zip(args.variant, rows):
        row["variant"] = text
    header = ["variant", f"median s per validation pass ({args.rounds} rounds)", "x first"]
    table = [[r["variant"], f"{r['median_s']:.3f}", f"{r['ratio']:.1f}"] for r in rows]
    print(pipe_table(header, table))
    record = {
        "dataset": args.dataset,
        "protocol": args.protocol,
        "common": args.common,
        "rounds": args.rounds,
        "runs": rows,
    }
    write_output(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
