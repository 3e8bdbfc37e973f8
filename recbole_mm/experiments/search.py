"""One search driver: what a hyper-parameter search does whichever backend runs its trials.

:func:`plan_search` opens a search: it parses the grid (``properties/hyper/<Model>.hyper``, or
``params_file``), checks it, fixes the other settings, builds the driver's ``Config`` (valid
metric and direction; an embedded dataset is built once here) and chooses the output folder.
A backend (:func:`recbole_mm.hyper.hyperopt_search`, :func:`recbole_mm.hyper.ray_search`)
then runs :func:`run_trial` per proposed configuration and hands its :class:`Trial` records to
:meth:`SearchPlan.finish`, which picks the best on validation (:func:`select_best`) and writes
the results (:func:`recbole_mm.experiments.results.write_search_results`).
"""

from __future__ import annotations

import ast
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_mm.experiments.results import write_search_results

ALGORITHMS = ("exhaustive", "random", "bayes")
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


@dataclass
class SearchPlan:
    """An opened search (:func:`plan_search`): the grid, the fixed settings, the driver Config."""

    model: str
    dataset: str
    algo: str
    space: dict
    fixed: dict
    config: Any
    folder: Path

    @property
    def bigger(self) -> bool:
        return bool(self.config["valid_metric_bigger"])

    def finish(self, backend: str, trials: list[Trial], wall_seconds: float) -> SearchResult:
        """Close the search: its :class:`SearchResult`, with the results written to ``folder``."""
        result = SearchResult(
            model=self.model,
            dataset=self.dataset,
            backend=backend,
            algo=self.algo,
            valid_metric=self.config["valid_metric"],
            bigger=self.bigger,
            trials=trials,
            wall_seconds=wall_seconds,
            output_dir=self.folder,
        )
        write_search_results(result, self.folder)
        return result


def plan_search(
    model: str,
    dataset: str,
    *,
    backend: str,
    algo: str,
    params_file: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    output_dir: str | None = None,
) -> SearchPlan:
    """Open a search: parse and check the grid, fix the settings, build the driver Config.

    Raises:
        ValueError: an unknown ``algo``, an unreadable grid, a searched name that is no
            configuration key, a continuous parameter under ``exhaustive``, a key both fixed
            and searched.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is not one of {', '.join(ALGORITHMS)}")
    path = space_file(model, params_file)
    space = read_space(path)
    check_space_keys(space, path)
    if algo == "exhaustive":
        _check_exhaustive(space, path)
    fixed = _fixed_settings(model, dataset, config_dict, space)
    config = _driver_config(model, dataset, config_file_list, fixed)
    folder = _output_dir(output_dir, model, dataset, backend, algo)
    return SearchPlan(model, dataset, algo, space, fixed, config, folder)
