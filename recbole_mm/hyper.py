"""Hyper-parameter search over any model, with hyperopt (one process) or Ray Tune (many).

One search space per model lives in ``properties/hyper/<Model>.hyper``, in RecBole's format
(one ``name type values`` line per parameter; types ``choice``, ``uniform``, ``quniform``,
``loguniform``, with hyperopt's meaning: ``loguniform a,b`` draws ``exp(uniform(a, b))``).
:func:`read_space` parses it once (with ``ast.literal_eval``, not RecBole's ``eval``) and both
backends search that same space:

- :func:`hyperopt_search` drives :class:`recbole.trainer.HyperTuning` (``exhaustive``,
  ``random``, ``bayes`` = TPE) in this process, one trial after the other;
- :func:`ray_search` runs trials in parallel on Ray Tune (a local Ray instance by default, or
  the cluster at ``address``): ``exhaustive`` as a grid, ``random`` by Tune's samplers,
  ``bayes`` by Ray's hyperopt TPE searcher.

Every trial trains with RecBole's trainer, keeps the checkpoint of its best validation epoch
and evaluates that checkpoint on test. The best configuration is chosen on the validation
metric (``valid_metric``) alone; test figures are only reported beside it. RecBole's own Ray
example reports the *test* result to Tune and selects on it; MMRec selects on test as well.
Each search writes ``results.csv``, ``results.md`` and ``results.json`` to its output folder.

What both backends share (parse the grid, fix the settings, run one trial, pick the best on
validation, write the results) is :mod:`recbole_mm.experiments.search`; this module holds the
two backends and the command line.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

# The shared opening and closing of a search, and its results table: recbole_mm.experiments.
# Their names stay importable from here.
from recbole_mm.experiments.results import write_search_results as write_results  # noqa: F401
from recbole_mm.experiments.search import (  # noqa: F401
    ALGORITHMS,
    DEFAULT_OUTPUT,
    SPACE_TYPES,
    SearchResult,
    Trial,
    check_space_keys,
    grid_size,
    plan_search,
    read_space,
    run_trial,
    select_best,
    space_file,
)

BACKENDS = ("hyperopt", "ray")


# -- search spaces, as each backend's library writes them ---------------------------------------
def hyperopt_space(space: dict) -> dict:
    from hyperopt import hp

    build = {
        "choice": lambda n, v: hp.choice(n, v),
        "uniform": lambda n, v: hp.uniform(n, *v),
        "quniform": lambda n, v: hp.quniform(n, *v),
        "loguniform": lambda n, v: hp.loguniform(n, *v),
    }
    return {name: build[kind](name, values) for name, (kind, values) in space.items()}


def ray_space(space: dict, algo: str) -> dict:
    """Tune's version of ``space``: a grid for ``exhaustive``, samplers for ``random``."""
    from ray import tune

    build = {
        "choice": lambda v: tune.grid_search(v) if algo == "exhaustive" else tune.choice(v),
        "uniform": lambda v: tune.uniform(*v),
        "quniform": lambda v: tune.quniform(*v),
        # hyperopt's bounds are logarithms; Tune's are values.
        "loguniform": lambda v: tune.loguniform(math.exp(v[0]), math.exp(v[1])),
    }
    return {name: build[kind](values) for name, (kind, values) in space.items()}


# -- hyperopt --------------------------------------------------------------------------------
def hyperopt_search(
    model: str,
    dataset: str,
    *,
    params_file: str | None = None,
    algo: str = "exhaustive",
    max_evals: int = 100,
    early_stop: int | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    output_dir: str | None = None,
    seed: int = 2020,
) -> SearchResult:
    """Search with :class:`recbole.trainer.HyperTuning` (hyperopt) in this process.

    Args:
        algo: ``exhaustive`` (every combination of the ``choice`` grid), ``random`` or
            ``bayes`` (TPE), the latter two for ``max_evals`` trials.
        early_stop: stop after this many trials without a better validation score
            (RecBole's ``no_progress_loss``); default: never for ``exhaustive``, 10 otherwise.
        seed: seeds hyperopt's proposals (``HYPEROPT_FMIN_SEED``) unless that is set already.
    """
    from recbole.trainer import HyperTuning

    plan = plan_search(
        model,
        dataset,
        backend="hyperopt",
        algo=algo,
        params_file=params_file,
        config_file_list=config_file_list,
        config_dict=config_dict,
        output_dir=output_dir,
    )
    if algo == "exhaustive":
        max_evals = grid_size(plan.space)
    if early_stop is None:
        early_stop = max_evals if algo == "exhaustive" else 10
    trials: list[Trial] = []

    def objective(params, config_files):
        folder = plan.folder / "trials" / str(len(trials))
        trial = run_trial(params, plan.fixed, config_files, folder)
        trials.append(trial)
        return {
            "model": model,
            "best_valid_score": trial.best_valid_score,
            "valid_score_bigger": plan.bigger,
            "best_valid_result": trial.valid,
            "test_result": trial.test,
        }

    tuner = HyperTuning(
        objective,
        space=hyperopt_space(plan.space),
        algo=algo,
        max_evals=max_evals,
        early_stop=early_stop,
        fixed_config_file_list=config_file_list,
    )
    previous_seed = os.environ.get("HYPEROPT_FMIN_SEED")
    os.environ.setdefault("HYPEROPT_FMIN_SEED", str(seed))
    start = time.perf_counter()
    try:
        tuner.run()
    finally:
        if previous_seed is None:
            os.environ.pop("HYPEROPT_FMIN_SEED", None)
    return plan.finish("hyperopt", trials, time.perf_counter() - start)


# -- Ray Tune --------------------------------------------------------------------------------
def _ray_trial(params, *, fixed, config_files, folder):
    """Tune's trainable: one trial in a Ray worker; reports flat, validation-first metrics."""
    import ray
    from ray.air import session

    gpus = ray.get_gpu_ids()
    fixed = {**fixed, "gpu_id": ",".join(str(g) for g in gpus), "use_gpu": bool(gpus)}
    trial = run_trial(dict(params), fixed, config_files, Path(folder, session.get_trial_id()))
    session.report(
        {
            "best_valid_score": trial.best_valid_score,
            **{f"valid {k}": v for k, v in trial.valid.items()},
            **{f"test {k}": v for k, v in trial.test.items()},
            "trial_seconds": trial.seconds,
            "checkpoint": trial.checkpoint,
        }
    )


def ray_search(
    model: str,
    dataset: str,
    *,
    params_file: str | None = None,
    algo: str = "exhaustive",
    max_evals: int = 20,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    output_dir: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    max_concurrent: int | None = None,
    seed: int = 2020,
) -> SearchResult:
    """Search on Ray Tune: trials in parallel, on this machine or a Ray cluster.

    Args:
        address: an existing Ray cluster (``auto`` or ``host:port``); None starts a local
            Ray with ``num_cpus``/``num_gpus`` (default: all) and stops it at the end.
        cpus_per_trial, gpus_per_trial: Tune's resources per trial (fractions allowed).
        max_concurrent: at most this many trials at once (default: as resources allow).
        max_evals: trials for ``random`` and ``bayes``; ``exhaustive`` runs the whole grid.
    """
    try:
        import ray
        from ray import tune
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ModuleNotFoundError(
            "the Ray backend needs Ray: pip install 'recbole_mm[ray]' (Python < 3.12, where "
            "ray 2.6.3 has wheels); the hyperopt backend needs no Ray",
            name="ray",
        ) from err

    from recbole_mm.compat import patch_ray_local_experiment_analysis

    plan = plan_search(
        model,
        dataset,
        backend="ray",
        algo=algo,
        params_file=params_file,
        config_file_list=config_file_list,
        config_dict=config_dict,
        output_dir=output_dir,
    )
    space, folder = plan.space, plan.folder
    mode = "max" if plan.bigger else "min"
    patch_ray_local_experiment_analysis()

    from ray.tune.search import BasicVariantGenerator

    search_alg, num_samples = BasicVariantGenerator(random_state=seed), max_evals
    param_space = ray_space(space, algo)
    if algo == "exhaustive":
        num_samples = 1
    elif algo == "bayes":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.hyperopt import HyperOptSearch

        search_alg = HyperOptSearch(
            hyperopt_space(space), metric="best_valid_score", mode=mode, random_state_seed=seed
        )
        if max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=max_concurrent)
        param_space = None

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=False,
            )
    start = time.perf_counter()
    try:
        analysis = tune.run(
            tune.with_parameters(
                _ray_trial,
                fixed=plan.fixed,
                config_files=[str(Path(f).resolve()) for f in config_file_list or []] or None,
                folder=str(folder / "trials"),
            ),
            config=param_space,
            search_alg=search_alg,
            num_samples=num_samples,
            resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial},
            max_concurrent_trials=max_concurrent if algo != "bayes" else None,
            storage_path=str(folder / "ray"),
            name="search",
            chdir_to_trial_dir=False,
            raise_on_failed_trial=False,
            verbose=1,
        )
        wall = time.perf_counter() - start
    finally:
        if started:
            ray.shutdown()
    trials = []
    for t in analysis.trials:
        last = t.last_result or {}
        trials.append(
            Trial(
                params={k: t.config[k] for k in space if k in t.config},
                best_valid_score=last.get("best_valid_score"),
                valid={k[6:]: v for k, v in last.items() if k.startswith("valid ")},
                test={k[5:]: v for k, v in last.items() if k.startswith("test ")},
                seconds=last.get("trial_seconds"),
                checkpoint=last.get("checkpoint"),
                error=None if "best_valid_score" in last else f"{t.status}: {t.error_file}",
            )
        )
    return plan.finish("ray", trials, wall)


# -- command line ----------------------------------------------------------------------------
def parse_overrides(args: list[str]) -> dict:
    """Deprecated: use :func:`recbole_mm.config.parse_overrides` (removed in recbole_mm 0.2)."""
    from recbole_mm import config

    warnings.warn(
        "recbole_mm.hyper.parse_overrides is deprecated: use recbole_mm.config.parse_overrides",
        DeprecationWarning,
        stacklevel=2,
    )
    return config.parse_overrides(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_hyper.py",
        description=(
            "Search hyper-parameters of a model (recbole_mm's or RecBole's) over "
            "properties/hyper/<Model>.hyper, select on validation, report test beside it. "
            "Other --key=value arguments fix configuration keys for every trial."
        ),
    )
    parser.add_argument("--model", "-m", default="VBPR")
    parser.add_argument("--dataset", "-d", default="ml-100k-mm")
    parser.add_argument("--params_file", default=None, help="default: the model's .hyper file")
    parser.add_argument("--algo", choices=ALGORITHMS, default="exhaustive")
    parser.add_argument("--backend", choices=BACKENDS, default="hyperopt")
    parser.add_argument("--max_evals", type=int, default=None, help="trials (random, bayes)")
    parser.add_argument("--early_stop", type=int, default=None, help="hyperopt: patience")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--output_dir", default=None, help=f"default: {DEFAULT_OUTPUT}/<...>")
    parser.add_argument("--seed", type=int, default=2020, help="seed of the proposals")
    ray_group = parser.add_argument_group("Ray Tune (--backend=ray)")
    ray_group.add_argument("--ray_address", default=None, help="existing cluster; default local")
    ray_group.add_argument("--num_cpus", type=int, default=None, help="local Ray's CPUs")
    ray_group.add_argument("--num_gpus", type=int, default=None, help="local Ray's GPUs")
    ray_group.add_argument("--cpus_per_trial", type=float, default=1)
    ray_group.add_argument("--gpus_per_trial", type=float, default=0)
    ray_group.add_argument("--max_concurrent", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> SearchResult:
    from recbole_mm.cli import user_errors
    from recbole_mm.config import parse_overrides

    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = parse_overrides(rest)
    except ValueError as err:
        parser.error(str(err))
    # Fixed keys travel in config_dict, below the searched values (as overrides, the command
    # line's layer, they would override the searched ones).
    files = args.config_files.split() if args.config_files else None
    common = dict(
        params_file=args.params_file,
        algo=args.algo,
        config_file_list=files,
        config_dict=overrides,
        output_dir=args.output_dir,
        seed=args.seed,
    )
    with user_errors(parser.prog):
        return _search(args, common)


def _search(args, common: dict) -> SearchResult:
    if args.backend == "ray":
        result = ray_search(
            args.model,
            args.dataset,
            max_evals=args.max_evals or 20,
            address=args.ray_address,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
            **common,
        )
    else:
        result = hyperopt_search(
            args.model,
            args.dataset,
            max_evals=args.max_evals or 100,
            early_stop=args.early_stop,
            **common,
        )
    best = result.best
    print(
        f"{len(result.trials)} trials in {result.wall_seconds:.1f} s; results in {result.output_dir}"
    )
    print(f"best parameters (valid {result.valid_metric}): {best.params}")
    print(f"valid: {best.valid}")
    print(f"test:  {best.test}")
    print(f"checkpoint: {best.checkpoint}")
    return result


if __name__ == "__main__":
    main()
