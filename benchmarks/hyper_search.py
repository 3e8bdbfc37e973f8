"""Wall time of one exhaustive search with hyperopt (sequential) and with Ray Tune (parallel).

    nice -n 10 python benchmarks/hyper_search.py --model=GTC --dataset=ml-100k-mm --epochs=1

Both backends search the same grid (default: 4 configurations, below) with the same fixed
settings; Ray starts a local instance with ``--num_cpus`` CPUs and runs
``num_cpus / cpus_per_trial`` trials at once. Each trial of the hyperopt search uses torch's
default thread count; each Ray trial gets ``cpus_per_trial`` threads (Ray sets
OMP_NUM_THREADS). Writes benchmark_results/hyper_search/<model>-<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_GRIDS = {
    "GTC": "gtc_gen_weight choice [0.2,0.6]\ngtc_tc_weight choice [0.2,0.6]\n",
    "VBPR": "reg_weight choice [0.01,0.001]\nlearning_rate choice [0.001,0.005]\n",
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="GTC")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--params_file", default=None, help="default: a 4-configuration grid")
    parser.add_argument("--backends", default="hyperopt,ray")
    parser.add_argument("--num_cpus", type=int, default=2)
    parser.add_argument("--cpus_per_trial", type=float, default=1)
    parser.add_argument("--out", default="benchmark_results/hyper_search")
    args, rest = parser.parse_known_args(argv)
    from recbole_mm.config import parse_overrides
    from recbole_mm.hyper import hyperopt_search, ray_search

    overrides = parse_overrides(rest)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params_file = args.params_file
    if params_file is None:
        params_file = out / f"{args.model}.hyper"
        params_file.write_text(DEFAULT_GRIDS[args.model])
    figures = {"model": args.model, "dataset": args.dataset, "fixed": overrides}
    for backend in args.backends.split(","):
        common = dict(
            params_file=str(params_file),
            algo="exhaustive",
            config_dict=overrides,
            output_dir=str(out / f"{args.model}-{args.dataset}-{backend}"),
        )
        if backend == "ray":
            result = ray_search(
                args.model,
                args.dataset,
                num_cpus=args.num_cpus,
                cpus_per_trial=args.cpus_per_trial,
                **common,
            )
        else:
            result = hyperopt_search(args.model, args.dataset, **common)
        best = result.best
        figures[backend] = {
            "wall_seconds": round(result.wall_seconds, 1),
            "trial_seconds": [round(t.seconds or 0, 1) for t in result.trials],
            "best_params": best.params,
            "best_valid": best.valid,
            "best_test": best.test,
        }
        print(backend, json.dumps(figures[backend]), flush=True)
    (out / f"{args.model}-{args.dataset}.json").write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
