"""One table from several benchmark outputs (runs made in separate invocations, e.g. one per seed).

``python -m recbole_mm.benchmark`` writes ``<out>/results.json`` per invocation. When the seeds
or the models of one comparison ran in several invocations (to fit a time budget, or because a
variant was added later), this script pools their runs and prints the table the benchmark
itself would have printed, with mean ± sample std over the pooled seeds.

    python benchmarks/merge_results.py benchmark_results/a benchmark_results/b \
        --metrics=ndcg@10,hit@10 [--label=variant] [--models=IMECD,SASRec]

``--label`` renames every model of one output (one label per output, comma-separated, empty to
keep the name), so that ablation variants of one model get their own rows. The split check of
:func:`recbole_mm.benchmark.summarise` runs over the pooled runs: a run whose test split differs
from the other runs of its seed is flagged ``DIFFERS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recbole_mm.benchmark import markdown_table, summarise


def pooled_runs(outputs, *, labels=None, models=None, metrics=None) -> list[dict]:
    """The runs of every ``results.json``, relabelled and restricted to ``metrics``."""
    runs = []
    for index, out in enumerate(outputs):
        path = Path(out) / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no results.json (is {out} a benchmark --out folder?)")
        for run in json.loads(path.read_text())["runs"]:
            if models and run["model"] not in models:
                continue
            run = dict(run)
            if labels and labels[index]:
                run["model"] = labels[index]
            if metrics:
                run["test_result"] = {
                    m: v for m, v in (run.get("test_result") or {}).items() if m in metrics
                }
            runs.append(run)
    return runs


def _names(text: str) -> list[str] | None:
    """A comma-separated list, or None (no filter) when empty."""
    return [x for x in text.split(",") if x] or None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", help="benchmark --out folders")
    parser.add_argument("--metrics", default="", help="comma-separated test metrics to show")
    parser.add_argument("--models", default="", help="comma-separated models to keep")
    parser.add_argument("--label", default="", help="one row label per output, comma-separated")
    args = parser.parse_args(argv)
    labels = args.label.split(",") if args.label else None
    if labels and len(labels) != len(args.outputs):
        parser.error(f"--label has {len(labels)} labels for {len(args.outputs)} outputs")
    runs = pooled_runs(
        args.outputs, labels=labels, models=_names(args.models), metrics=_names(args.metrics)
    )
    if not runs:
        raise SystemExit("no runs matched")
    print(markdown_table(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
