"""One table from several benchmark outputs (runs made in separate invocations, e.g. one per seed).

``python -m recbole_mm.benchmark`` writes ``<out>/results.json`` per invocation. When the seeds
or the models of one comparison ran in several invocations (to fit a time budget, or because a
variant was added later), this script pools their runs and prints the table the benchmark
itself would have printed, with mean ± sample std over the pooled seeds.

    python benchmarks/merge_results.py benchmark_results/a benchmark_results/b \
        --metrics=ndcg@10,hit@10 [--label=variant] [--models=IMECD,SASRec]

``--runs`` prints one row per run instead (model, dataset, seed, epochs, the best validation
score, the test metrics) with the command that repeats it, rebuilt from the run's spec file;
docs/results.md is made of these tables.

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
            run["command"] = run_command(Path(out), run)  # by the run's own model name
            if labels and labels[index]:
                run["model"] = labels[index]
            if metrics:
                run["test_result"] = {
                    m: v for m, v in (run.get("test_result") or {}).items() if m in metrics
                }
            runs.append(run)
    return runs


def run_command(out: Path, run: dict) -> str:
    """The benchmark command that repeats one run, from ``<out>/runs/<model>-seed<seed>.spec.json``
    (the run's own model name, before any relabelling)."""
    spec_file = out / "runs" / f"{run['model']}-seed{run['seed']}.spec.json"
    if not spec_file.is_file():
        return ""
    spec = json.loads(spec_file.read_text())
    parts = [
        "python -m recbole_mm.benchmark",
        f"--dataset={spec['dataset']}",
        f"--models={spec['model']}",
        f"--seeds={spec['seed']}",
    ]
    if spec.get("config_file_list"):
        parts.append(f"--config_files='{' '.join(spec['config_file_list'])}'")
    parts += spec.get("overrides") or []
    return " ".join(parts)


def runs_table(runs) -> str:
    """One Markdown row per run: validation beside test, and the command."""
    metrics = sorted({m for run in runs for m in (run.get("test_result") or {})})
    head = ["model", "dataset", "seed", "epochs", "best valid", *(f"test {m}" for m in metrics)]
    lines = ["| " + " | ".join([*head, "command"]) + " |", "|" + "---|" * (len(head) + 1)]
    for run in sorted(runs, key=lambda r: (r.get("dataset", ""), r["model"], r["seed"])):
        test = run.get("test_result") or {}
        valid = run.get("best_valid_score")
        cells = [
            run["model"],
            run.get("dataset", ""),
            str(run["seed"]),
            str(run.get("epochs", "")),
            f"{run.get('valid_metric', '')} {valid:.4f}" if valid is not None else run["status"],
            *(f"{test[m]:.4f}" if m in test else "" for m in metrics),
            f"`{run['command']}`" if run.get("command") else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _names(text: str) -> list[str] | None:
    """A comma-separated list, or None (no filter) when empty."""
    return [x for x in text.split(",") if x] or None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", help="benchmark --out folders")
    parser.add_argument("--metrics", default="", help="comma-separated test metrics to show")
    parser.add_argument("--models", default="", help="comma-separated models to keep")
    parser.add_argument("--label", default="", help="one row label per output, comma-separated")
    parser.add_argument("--runs", action="store_true", help="one row per run, with its command")
    args = parser.parse_args(argv)
    labels = args.label.split(",") if args.label else None
    if labels and len(labels) != len(args.outputs):
        parser.error(f"--label has {len(labels)} labels for {len(args.outputs)} outputs")
    runs = pooled_runs(
        args.outputs, labels=labels, models=_names(args.models), metrics=_names(args.metrics)
    )
    if not runs:
        raise SystemExit("no runs matched")
    print(runs_table(runs) if args.runs else markdown_table(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
