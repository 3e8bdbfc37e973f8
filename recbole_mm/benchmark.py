"""Benchmark several models on one dataset: one split, the same seeds, one table.

``python -m recbole_mm.benchmark --dataset=ml-100k-mm --models=BPR,LightGCN,SASRec`` trains and
evaluates every model once per seed, each run in a fresh Python process (so that its peak memory
is its own), and writes to ``--out`` (default ``benchmark_results/<dataset>``):

* ``results.json``: every run, raw (metrics, timings, validation curve, split hash, errors);
* ``results.csv``: one row per run;
* ``results.md``: one row per model, mean ± sample std over seeds (printed at the end);
* ``valid_curves.png``: validation score per evaluation, one line per model;
* ``runs/<model>-seed<seed>.{spec.json,json,log}``: what each worker was asked, what it
  returned, and its log. ``python -m recbole_mm.benchmark --worker <spec.json>`` repeats one run.

Protocol rule: RecBole's general models split 8:1:1 at random by default and its sequential
models leave one out by time, so a mixed model list would be ranked on different test sets.
With ``--protocol=auto`` (the default) a list that mixes sequential and non-sequential models
runs every model under leave-one-out by time (:data:`LOO_EVAL_ARGS`); ``loo`` and ``ratio`` force
a protocol, ``dataset`` keeps what the configuration says. Each run hashes its test split (the
sorted original user/item id pairs) and the table flags models whose split differs.

Timings come from :class:`recbole_mm.experiments.timer.TimedTrainerMixin`, put in front of the
model's trainer class; RecBole's ``fit`` loop runs unchanged.
See docs/benchmark.md for every column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# split_hash and peak_rss_mb stay importable from here, as before the move.
from recbole_mm.experiments.measure import measure_run, peak_rss_mb, split_hash  # noqa: F401
from recbole_mm.experiments.results import (
    check_splits,
    markdown_report,
    plot_valid_curves,
    results_record,
    summarise,
    write_csv,
    write_json,
)
from recbole_mm.experiments.results import (  # re-exported for benchmarks/merge_results.py
    markdown_table as markdown_table,
)

PROTOCOLS = ("auto", "dataset", "loo", "ratio")
# Leave-one-out by time: the last interaction of each user is its test item, the one before it
# its validation item. RecBole's sequential models refuse any order but TO.
LOO_EVAL_ARGS = {
    "split": {"LS": "valid_and_test"},
    "order": "TO",
    "group_by": "user",
    "mode": "full",
}
# Per-user 8:1:1 by time: the oldest 80% train, the newest 10% test.
RATIO_EVAL_ARGS = {
    "split": {"RS": [0.8, 0.1, 0.1]},
    "order": "TO",
    "group_by": "user",
    "mode": "full",
}
PROTOCOL_EVAL_ARGS = {"loo": LOO_EVAL_ARGS, "ratio": RATIO_EVAL_ARGS}
DEFAULT_DATASET = "ml-100k-mm"
DEFAULT_SEEDS = (2020,)
# Keys the benchmark sets per run; the user chooses them through its own arguments instead.
RESERVED_KEYS = {"model": "--models", "dataset": "--dataset", "seed": "--seeds"}


# ---------------------------------------------------------------------------------------------
# Protocol


def model_types(models: Sequence[str]) -> dict[str, str]:
    """RecBole model type of each model (``"GENERAL"``, ``"SEQUENTIAL"``, ...).

    Args:
        models: model names, recbole_mm's or RecBole's.

    Raises:
        UnknownModelError: a name that neither recbole_mm nor RecBole defines (the message lists
            the valid names).
    """
    from recbole_mm.utils import get_model

    return {name: get_model(name).type.name for name in models}


def mixes_sequential(types: dict[str, str]) -> bool:
    """Whether a model list holds both sequential and non-sequential models.

    Args:
        types: model name -> RecBole model type name, as :func:`model_types` returns.
    """
    return {t == "SEQUENTIAL" for t in types.values()} == {True, False}


def _eval_args_given(
    config_file_list: Sequence[str] | None, config_dict: dict | None, overrides: dict
) -> bool:
    """Whether the user sets ``eval_args`` in a config file, the config dict or an override
    (``overrides`` as :func:`recbole_mm.config.parse_overrides` returns them)."""
    import yaml

    if config_dict and "eval_args" in config_dict:
        return True
    if "eval_args" in overrides:
        return True
    for file in config_file_list or ():
        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # RecBole reports unreadable files when the run starts
        if isinstance(loaded, dict) and "eval_args" in loaded:
            return True
    return False


def resolve_protocol(
    types: dict[str, str], protocol: str = "auto", *, eval_args_given: bool = False
) -> tuple[str, dict | None]:
    """The protocol every model runs under and the ``eval_args`` it imposes.

    Args:
        types: model name -> RecBole model type name, as :func:`model_types` returns.
        protocol: ``auto``, ``dataset``, ``loo`` or ``ratio``.
        eval_args_given: the user sets ``eval_args`` explicitly (then ``auto`` keeps them).

    Returns:
        ``(resolved protocol, eval_args)``; ``eval_args`` is None for ``dataset``, which leaves
        the split to the dataset and model configurations.

    Raises:
        ValueError: an unknown protocol, or ``loo``/``ratio`` together with explicit
            ``eval_args`` (two answers to one question).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol in PROTOCOL_EVAL_ARGS and eval_args_given:
        raise ValueError(
            f"protocol={protocol!r} sets eval_args, and eval_args are also given explicitly: "
            "use one or the other (or protocol='dataset' to keep your eval_args)"
        )
    if protocol == "auto":
        protocol = "loo" if mixes_sequential(types) and not eval_args_given else "dataset"
    return protocol, PROTOCOL_EVAL_ARGS.get(protocol)


# ---------------------------------------------------------------------------------------------
# One run (the worker process: recbole_mm.experiments.measure.measure_run)


def run_worker(spec_file: str | Path) -> None:
    """Body of ``--worker``: run the spec's measurement, write its result file.

    Args:
        spec_file: JSON with ``model``, ``dataset``, ``seed``, ``config_file_list``,
            ``config_dict``, ``overrides`` and ``result_file``.
    """
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    result = measure_run(
        spec["model"],
        spec["dataset"],
        seed=spec["seed"],
        config_file_list=spec["config_file_list"],
        config_dict=spec["config_dict"],
        overrides=spec["overrides"],
    )
    result_file = Path(spec["result_file"])
    partial = result_file.with_suffix(".part")
    partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
    partial.replace(result_file)


# ---------------------------------------------------------------------------------------------
# Many runs (in the parent process)


def run_in_subprocess(spec: dict, run_dir: Path, *, timeout: float | None = None) -> dict:
    """Run one spec in a fresh ``python -m recbole_mm.benchmark --worker`` process.

    Args:
        spec: as :func:`run_worker` reads it, without ``result_file``.
        run_dir: folder for the spec, the result and the worker's log.
        timeout: seconds before the worker is killed; None waits.

    Returns:
        The worker's result, or a record with ``status="failed"`` and the end of its log.
    """
    stem = f"{spec['model']}-seed{spec['seed']}"
    spec_file, result_file, log_file = (
        run_dir / f"{stem}.spec.json",
        run_dir / f"{stem}.json",
        run_dir / f"{stem}.log",
    )
    result_file.unlink(missing_ok=True)
    spec_file.write_text(
        json.dumps({**spec, "result_file": str(result_file.resolve())}, indent=1), encoding="utf-8"
    )
    command = [sys.executable, "-m", "recbole_mm.benchmark", "--worker", str(spec_file)]
    # The worker imports the recbole_mm this process runs, installed or not.
    package_root = str(Path(__file__).resolve().parents[1])
    pythonpath = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    error = None
    with log_file.open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env
            )
            if proc.returncode != 0:
                error = f"worker exited with status {proc.returncode}"
        except subprocess.TimeoutExpired:
            error = f"worker killed after the {timeout:g} s timeout"
    if error is None and result_file.is_file():
        result = json.loads(result_file.read_text(encoding="utf-8"))
    else:
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        result = {
            "model": spec["model"],
            "dataset": spec["dataset"],
            "seed": spec["seed"],
            "status": "failed",
            "error": (error or "worker wrote no result") + "\n" + "\n".join(tail),
        }
    result["log"] = str(log_file)
    return result


def _check_overrides(overrides: Sequence[str], config_dict: dict | None) -> dict:
    """The overrides as settings; raises ValueError for a malformed one or a reserved key."""
    from recbole_mm.config import parse_overrides

    settings = parse_overrides(overrides)
    for key, option in RESERVED_KEYS.items():
        if key in settings or key in (config_dict or {}):
            raise ValueError(f"'{key}' is set per run by the benchmark: use {option} instead")
    return settings


def run_benchmark(
    models: Sequence[str],
    dataset: str = DEFAULT_DATASET,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    overrides: Sequence[str] = (),
    protocol: str = "auto",
    out: str | Path | None = None,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every model with every seed, each in a fresh process, and write the reports.

    Every name is checked before the first run starts.

    Args:
        models: model names, recbole_mm's or RecBole's.
        dataset: dataset name.
        seeds: one run per model and seed.
        config_file_list: YAML files applied to every model.
        config_dict: configuration applied to every model (JSON-serialisable).
        overrides: ``--key=value`` strings applied to every model, as on RecBole's command line
            (highest precedence).
        protocol: ``auto``, ``dataset``, ``loo`` or ``ratio`` (module docstring).
        out: output folder; default ``benchmark_results/<dataset>``.
        timeout: seconds allowed to each run; None waits.
        progress: called with one line per started and finished run; default prints to stderr.

    Returns:
        ``{"out", "protocol", "eval_args", "runs", "rows", "splits", "report"}``; ``report`` is
        the text of results.md.

    Raises:
        UnknownModelError: an unknown model name.
        ValueError: an empty or duplicated model list, no seeds, a malformed override, a reserved
            key (model, dataset, seed) in the configuration, or conflicting protocol settings.
    """
    if progress is None:

        def progress(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    models, seeds, overrides = list(models), [int(s) for s in seeds], list(overrides)
    if not models:
        raise ValueError("no models given")
    if len(set(models)) != len(models):
        raise ValueError(f"a model is listed twice: {models}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and not empty: {seeds}")
    settings = _check_overrides(overrides, config_dict)
    types = model_types(models)
    config_files = [str(Path(f).resolve()) for f in config_file_list or []]
    given = _eval_args_given(config_files, config_dict, settings)
    resolved, eval_args = resolve_protocol(types, protocol, eval_args_given=given)

    out = Path(out) if out is not None else Path("benchmark_results") / dataset
    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    mixed = mixes_sequential(types)
    switched = protocol == "auto" and resolved == "loo"
    progress(
        f"benchmark: {', '.join(models)} on {dataset}, seeds {seeds}, protocol {resolved}"
        + (" (auto: the list mixes sequential and non-sequential models)" if switched else "")
    )
    if mixed and resolved == "ratio":
        progress(
            "warning: RecBole splits a sequential dataset after turning each user's N "
            "interactions into N-1 (history -> next item) rows, so 8:1:1 of them is not the "
            "general models' test set; use --protocol=loo to compare the two kinds"
        )

    runs: list[dict] = []
    total, index = len(models) * len(seeds), 0
    for seed in seeds:
        for model in models:
            index += 1
            run_config = dict(config_dict or {})
            if eval_args is not None:
                run_config["eval_args"] = eval_args
            # One checkpoint folder per run: RecBole names checkpoints by model and second only.
            run_config.setdefault(
                "checkpoint_dir", str((out / "checkpoints" / f"{model}-seed{seed}").resolve())
            )
            spec = {
                "model": model,
                "dataset": dataset,
                "seed": seed,
                "config_file_list": config_files,
                "config_dict": run_config,
                "overrides": overrides,
            }
            progress(f"[{index}/{total}] {model} seed={seed} ...")
            started = time.perf_counter()
            run = run_in_subprocess(spec, run_dir, timeout=timeout)
            run["protocol"] = resolved
            runs.append(run)
            wall = time.perf_counter() - started
            if run["status"] == "ok":
                vm = run["valid_metric"]
                progress(
                    f"[{index}/{total}] {model} seed={seed}: {run['epochs']} epochs, "
                    f"test {vm}={run['test_result'].get(vm, float('nan')):.4f}, {wall:.0f} s"
                )
            else:
                progress(f"[{index}/{total}] {model} seed={seed} FAILED: {run['error']}")
            write_json(out / "results.json", results_record(dataset, resolved, eval_args, runs))

    rows = summarise(runs)
    report = markdown_report(rows, runs, dataset=dataset, protocol=resolved)
    write_csv(runs, out / "results.csv")
    (out / "results.md").write_text(report, encoding="utf-8")
    plot_valid_curves(runs, out / "valid_curves.png")
    splits = check_splits(runs)
    for seed, split in splits.items():
        if not split["consistent"]:
            progress(
                f"warning: seed {seed}: the test split of {', '.join(split['odd'])} differs "
                "from the other models'; their figures are not comparable"
            )
    return {
        "out": out,
        "protocol": resolved,
        "eval_args": eval_args,
        "runs": runs,
        "rows": rows,
        "splits": splits,
        "report": report,
    }


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_mm.benchmark",
        description=(
            "Train and evaluate several models on one dataset with the same split and seeds, "
            "each run in a fresh process, and write results.{json,csv,md} and valid_curves.png. "
            "Other --key=value arguments override configuration keys for every model "
            "(e.g. --epochs=20 --gpu_id=0)."
        ),
        epilog=(
            "Protocols: auto (default) = dataset, except that a list mixing sequential and "
            "non-sequential models runs all of them leave-one-out by time; dataset = keep what "
            "the dataset/model configs say; loo = leave-one-out by time; ratio = per-user 8:1:1 "
            "by time. See docs/benchmark.md."
        ),
        allow_abbrev=False,  # --seed=... must stay an override error, not become --seeds
    )
    parser.add_argument("--models", help="comma-separated model names, e.g. BPR,LightGCN,SASRec")
    parser.add_argument(
        "--dataset", default=DEFAULT_DATASET, help="dataset name (default: %(default)s)"
    )
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, DEFAULT_SEEDS)),
        help="comma-separated seeds (default: %(default)s)",
    )
    parser.add_argument(
        "--config_files", default=None, help="space-separated YAML files, applied in order"
    )
    parser.add_argument("--out", default=None, help="output folder (benchmark_results/<dataset>)")
    parser.add_argument(
        "--protocol", default="auto", choices=PROTOCOLS, help="split protocol (default: auto)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per run (default: no limit)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when a run failed).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = _parser()
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if not args.models:
        parser.error("--models is required, e.g. --models=BPR,LightGCN,SASRec")
    from recbole_mm.utils import UnknownModelError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={args.seeds}: expected comma-separated integers")
    try:
        result = run_benchmark(
            [m.strip() for m in args.models.split(",") if m.strip()],
            args.dataset,
            seeds=seeds,
            config_file_list=args.config_files.split() if args.config_files else None,
            overrides=overrides,
            protocol=args.protocol,
            out=args.out,
            timeout=args.timeout,
        )
    except (UnknownModelError, ValueError) as err:
        parser.error(str(err))
    print(result["report"], end="")
    return 0 if all(r["status"] == "ok" for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
