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
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from recbole_mm.experiments.results import write_search_results as write_results

ALGORITHMS = ("exhaustive", "random", "bayes")
BACKENDS = ("hyperopt", "ray")
SPACE_TYPES = ("choice", "uniform", "quniform", "loguniform")
DEFAULT_OUTPUT = "saved/hyper"


# -- search spaces ---------------------------------------------------------------------------
def read_space(path: str | Path) -> dict[str, tuple[str, list]]:
    """``{name: (type, values)}`` from a ``.hyper`` file.

    Raises:
        ValueError: a line that is not ``name type values`` with a known type and values.
    """
    space = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3 or parts[1] not in SPACE_TYPES:
            raise ValueError(
                f"{path}:{number}: '{line}' is not 'name type values' with type one of "
                f"{', '.join(SPACE_TYPES)} (e.g. 'learning_rate choice [0.01,0.001]')."
            )
        name, kind, text = parts
        for opening, closing in ("[]", "()"):
            if text.count(opening) > text.count(closing):
                raise ValueError(
                    f"{path}:{number}: the values of {name} open a list with '{opening}' that "
                    f"is not closed: '{text}'. Close it with '{closing}' on the same line "
                    f"(one parameter per line, e.g. '{name} choice [0.01,0.001]')."
                )
        try:
            values = ast.literal_eval(text.replace(" ", ""))
        except (ValueError, SyntaxError) as err:
            raise ValueError(
                f"{path}:{number}: values '{text}' of {name} are unreadable: write numbers, "
                f"quoted strings, True/False/None, or lists of them (e.g. [0.01,0.001])."
            ) from err
        if kind == "choice":
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"{path}:{number}: choice {name} needs a non-empty list")
            values = list(values)
        else:
            expected = 3 if kind == "quniform" else 2
            if not isinstance(values, tuple) or len(values) != expected:
                raise ValueError(
                    f"{path}:{number}: {kind} {name} needs {expected} comma-separated numbers"
                )
            values = [float(v) for v in values]
        space[name] = (kind, values)
    if not space:
        raise ValueError(f"{path}: no parameters to search")
    return space


def check_space_keys(space: dict, source) -> None:
    """Refuse searched names that are no configuration key: every trial would be the same.

    Raises:
        ValueError: naming the key and the nearest known one.
    """
    from recbole_mm.config import did_you_mean, known_keys

    for name in space:
        if name not in known_keys():
            raise ValueError(
                f"{source}: '{name}' is not a configuration key of RecBole or recbole_mm: "
                f"{did_you_mean(name)} Searching it would run identical trials; fix the name."
            )


def space_file(model: str, params_file: str | None = None) -> Path:
    """``params_file``, or the model's ``properties/hyper/<Model>.hyper``."""
    from recbole_mm.properties import hyper_file, properties_dir

    path = Path(params_file) if params_file else hyper_file(model)
    if not path.is_file():
        known = sorted(p.stem for p in (properties_dir() / "hyper").glob("*.hyper"))
        raise ValueError(
            f"params_file={path} does not exist. Write one ('name choice [v1,v2]' per line) or "
            f"use a model with a shipped grid: {', '.join(known)}."
        )
    return path


def grid_size(space: dict) -> int:
    return math.prod(len(values) for _, values in space.values())


def _check_exhaustive(space: dict, source) -> None:
    continuous = [name for name, (kind, _) in space.items() if kind != "choice"]
    if continuous:
        raise ValueError(
            f"algo=exhaustive needs 'choice' parameters only; {source} has "
            f"{', '.join(continuous)} ({space[continuous[0]][0]}). Use algo=random or bayes."
        )


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


# -- trials and results ----------------------------------------------------------------------
@dataclass
class Trial:
    """One configuration: its validation result (selection) and test result (report)."""

    params: dict
    best_valid_score: float | None = None
    valid: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    seconds: float | None = None
    checkpoint: str | None = None
    error: str | None = None


@dataclass
class SearchResult:
    model: str
    dataset: str
    backend: str
    algo: str
    valid_metric: str
    bigger: bool
    trials: list[Trial]
    wall_seconds: float
    output_dir: Path | None = None

    @property
    def best(self) -> Trial:
        return select_best(self.trials, bigger=self.bigger)


def select_best(trials: list[Trial], *, bigger: bool) -> Trial:
    """The trial with the best validation score (the first one on ties); test is never read."""
    done = [t for t in trials if t.error is None and t.best_valid_score is not None]
    if not done:
        raise RuntimeError("No trial finished: see the errors in the results table.")
    sign = 1.0 if bigger else -1.0
    return max(done, key=lambda t: (sign * t.best_valid_score, -trials.index(t)))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def run_trial(params: dict, fixed: dict, config_files: list[str] | None, trial_dir: Path) -> Trial:
    """Train one configuration, keep its best-validation checkpoint, evaluate it on test."""
    from recbole_mm.quick_start import objective_function
    from recbole_mm.trainer.checkpoint import last_checkpoint_file

    trial_dir.mkdir(parents=True, exist_ok=True)
    config_dict = {**fixed, **params, "checkpoint_dir": str(trial_dir)}
    start = time.perf_counter()
    # The search's own settings only: this process's sys.argv is not the trial's.
    result = objective_function(config_dict, config_files, saved=True, overrides={})
    seconds = time.perf_counter() - start
    checkpoint = result.get("checkpoint")
    if checkpoint:  # a finished trial needs no resume file
        Path(last_checkpoint_file(checkpoint)).unlink(missing_ok=True)
    return Trial(
        params=params,
        best_valid_score=float(result["best_valid_score"]),
        valid={k: _plain(v) for k, v in (result["best_valid_result"] or {}).items()},
        test={k: _plain(v) for k, v in (result["test_result"] or {}).items()},
        seconds=seconds,
        checkpoint=checkpoint,
    )


def _driver_config(model, dataset, config_files, fixed):
    """The run's Config in the driver (valid metric, direction); builds an embedded dataset once.

    RecBole's Config sets CUDA_VISIBLE_DEVICES from gpu_id: the driver keeps its own, so that
    Ray sees every GPU.
    """
    from recbole_mm.config import Config
    from recbole_mm.data.dataset import prepare_dataset_files

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = Config(
            model=model,
            dataset=dataset,
            config_file_list=config_files,
            config_dict=dict(fixed),
            overrides={},
        )
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    prepare_dataset_files(config)
    return config


def _fixed_settings(model, dataset, config_dict, space) -> dict:
    fixed = {**(config_dict or {}), "model": model, "dataset": dataset}
    clash = sorted(set(fixed) & set(space))
    if clash:
        raise ValueError(
            f"{', '.join(clash)} is both fixed (config) and searched (params_file): drop it "
            f"from one of them."
        )
    for key in ("data_path", "checkpoint_dir"):
        if key in fixed:  # trials may run in another working directory (Ray)
            fixed[key] = str(Path(fixed[key]).resolve())
    return fixed


def _output_dir(output_dir, model, dataset, backend, algo) -> Path:
    if output_dir:
        return Path(output_dir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(DEFAULT_OUTPUT, f"{model}-{dataset}-{backend}-{algo}-{stamp}").resolve()


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

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is not one of {', '.join(ALGORITHMS)}")
    path = space_file(model, params_file)
    space = read_space(path)
    check_space_keys(space, path)
    if algo == "exhaustive":
        _check_exhaustive(space, path)
        max_evals = grid_size(space)
    if early_stop is None:
        early_stop = max_evals if algo == "exhaustive" else 10
    fixed = _fixed_settings(model, dataset, config_dict, space)
    config = _driver_config(model, dataset, config_file_list, fixed)
    folder = _output_dir(output_dir, model, dataset, "hyperopt", algo)
    trials: list[Trial] = []

    def objective(params, config_files):
        trial = run_trial(params, fixed, config_files, folder / "trials" / str(len(trials)))
        trials.append(trial)
        return {
            "model": model,
            "best_valid_score": trial.best_valid_score,
            "valid_score_bigger": config["valid_metric_bigger"],
            "best_valid_result": trial.valid,
            "test_result": trial.test,
        }

    tuner = HyperTuning(
        objective,
        space=hyperopt_space(space),
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
    result = SearchResult(
        model=model,
        dataset=dataset,
        backend="hyperopt",
        algo=algo,
        valid_metric=config["valid_metric"],
        bigger=bool(config["valid_metric_bigger"]),
        trials=trials,
        wall_seconds=time.perf_counter() - start,
        output_dir=folder,
    )
    write_results(result, folder)
    return result


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

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is not one of {', '.join(ALGORITHMS)}")
    path = space_file(model, params_file)
    space = read_space(path)
    check_space_keys(space, path)
    if algo == "exhaustive":
        _check_exhaustive(space, path)
    fixed = _fixed_settings(model, dataset, config_dict, space)
    config = _driver_config(model, dataset, config_file_list, fixed)
    bigger = bool(config["valid_metric_bigger"])
    mode = "max" if bigger else "min"
    folder = _output_dir(output_dir, model, dataset, "ray", algo)
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
                fixed=fixed,
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
    result = SearchResult(
        model=model,
        dataset=dataset,
        backend="ray",
        algo=algo,
        valid_metric=config["valid_metric"],
        bigger=bigger,
        trials=trials,
        wall_seconds=wall,
        output_dir=folder,
    )
    write_results(result, folder)
    return result


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
