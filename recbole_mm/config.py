"""RecBole's Config, extended with recbole_mm's property files.

Precedence, lowest first (RecBole's own rule, with our files inside the "internal" layer):
RecBole's internal properties (overall, model, dataset, model-type quick-start files) <
recbole_mm's ``properties/overall.yaml`` < ``properties/model/<Model>.yaml`` <
``properties/dataset/<dataset>.yaml`` < config files < config dict < command line.

The command line reaches a ``Config`` only as its ``overrides`` argument, parsed once by
:func:`parse_overrides`: this Config does not read ``sys.argv`` when it is given them.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_mm import properties
from recbole_mm.lookup import get_model

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting or a configuration file that cannot be used; the message names it and the fix."""


# Keys RecBole reads or sets at run time that no property file lists.
RUNTIME_KEYS = (
    "model",
    "dataset",
    "local_rank",
    "nproc",
    "world_size",
    "ip",
    "port",
    "offset",
    "encoding",
    "single_spec",
    "eval_type",
    "MODEL_TYPE",
    "MODEL_INPUT_TYPE",
    "device",
)
_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][\w\-]*)\s*:", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Every configuration key RecBole or recbole_mm knows: RecBole's argument lists, the keys
    of RecBole's and recbole_mm's property files (overall, every model, every dataset), and the
    keys RecBole sets at run time."""
    import recbole
    from recbole.utils import argument_list

    keys = set(RUNTIME_KEYS)
    for name in ("general", "training", "evaluation", "dataset"):
        keys.update(getattr(argument_list, f"{name}_arguments"))
    folders = (Path(recbole.__file__).parent / "properties", properties.properties_dir())
    for folder in folders:
        for file in folder.rglob("*.yaml"):
            keys.update(_TOP_LEVEL_KEY.findall(file.read_text(encoding="utf-8")))
    return frozenset(keys)


def nearest_key(key: str) -> str | None:
    """The known key closest to ``key`` (difflib), or None when nothing is close."""
    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(key: str) -> str:
    """``did you mean '<nearest known key>'?``, or a sentence saying none is close."""
    near = nearest_key(key)
    return f"did you mean '{near}'?" if near else "no known key is close to it."


_warned: set[str] = set()


def warn_unknown_keys(keys, source: str) -> list[str]:
    """Warn (once per process and key) about keys no property file or RecBole list knows."""
    unknown = [k for k in keys if isinstance(k, str) and k not in known_keys()]
    for key in unknown:
        if key not in _warned:
            _warned.add(key)
            logger.warning(
                "Unknown setting '%s' (%s): %s It is not a configuration key of RecBole or "
                "recbole_mm; unless the model reads it itself, it has no effect.",
                key,
                source,
                did_you_mean(key),
            )
    return unknown


def normalize_overrides(args: Sequence[str]) -> list[str]:
    """Command-line overrides as ``--key=value``; ``--key value`` is accepted too.

    Raises:
        ConfigError: an argument that is neither form (the message shows both).
    """
    normalized, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2 and "=" in arg:
            normalized.append(arg)
        elif arg.startswith("--") and len(arg) > 2 and i + 1 < len(args):
            if args[i + 1].startswith("--"):
                raise ConfigError(
                    f"Argument '{arg}' has no value: write {arg}=VALUE (e.g. --epochs=10)."
                )
            normalized.append(f"{arg}={args[i + 1]}")
            i += 1
        elif arg.startswith("--") and len(arg) > 2:
            raise ConfigError(
                f"Argument '{arg}' has no value: write {arg}=VALUE (e.g. --epochs=10)."
            )
        else:
            raise ConfigError(
                f"Argument '{arg}' is not a setting: write settings as --key=value "
                f"(e.g. --epochs=10)."
            )
        i += 1
    return normalized


def parse_overrides(args: Sequence[str]) -> dict:
    """Command-line overrides (``--key=value`` or ``--key value``) as settings, typed as RecBole
    types its command line: a Python literal or expression where the text is one (``10``,
    ``1e-3``, ``[10, 20]``, ``None``), ``true``/``false`` in any case as booleans, else the
    text.

    Raises:
        ConfigError: an argument that is not a setting, a value holding ``=`` (RecBole would
            drop the argument), or one key given two values.
    """
    settings = {}
    for arg in normalize_overrides(args):
        parts = arg[2:].split("=")
        if len(parts) != 2:
            raise ConfigError(
                f"Argument '{arg}' holds more than one '=': write one setting per argument as "
                f"--key=value (e.g. --epochs=10)."
            )
        key, text = parts
        if key in settings and settings[key] != text:
            raise ConfigError(
                f"--{key} is given twice, as {settings[key]!r} and {text!r}: keep one."
            )
        settings[key] = text
    # RecBole's own conversion (it types config_dict values the same way); it reads no state.
    return RecBoleConfig._convert_config_dict(None, settings)


def _whole(minimum: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number (>= {minimum})"
        if value < minimum:
            return f"must be >= {minimum}"
        return None

    return check


def _number(*, positive: bool):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, Real):
            return "must be a number"
        if positive and not value > 0:
            return "must be > 0"
        if not positive and not value >= 0:
            return "must be >= 0"
        return None

    return check


def _topk(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or any(_whole(1)(v) for v in values):
        return "must be a whole number >= 1 or a list of them (e.g. [10, 20])"
    return None


# Checks of common settings whose bad values RecBole reports late and obscurely.
VALUE_CHECKS = {
    "epochs": (_whole(0), "10"),
    "train_batch_size": (_whole(1), "2048"),
    "eval_batch_size": (_whole(1), "4096"),
    "eval_step": (_whole(0), "1"),
    "stopping_step": (_whole(1), "10"),
    "seed": (_whole(0), "2020"),
    "embedding_size": (_whole(1), "64"),
    "learning_rate": (_number(positive=True), "0.001"),
    "weight_decay": (_number(positive=False), "0.0"),
    "topk": (_topk, "[10, 20]"),
}


class Config(RecBoleConfig):
    """Drop-in replacement for :class:`recbole.config.Config` that knows recbole_mm.

    Args:
        model, dataset, config_file_list, config_dict: as RecBole's ``Config``.
        overrides: the command line's settings, as :func:`parse_overrides` returns them
            (highest precedence). Without them the Config reads ``sys.argv`` as RecBole's does,
            with a ``FutureWarning`` when it finds settings there: recbole_mm 0.2 stops.
    """

    def __init__(
        self,
        model=None,
        dataset=None,
        config_file_list=None,
        config_dict=None,
        *,
        overrides: Mapping | None = None,
    ):
        self._overrides = None if overrides is None else dict(overrides)
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        if self._overrides is not None:
            return dict(self._overrides)
        settings = super()._load_cmd_line()
        if settings:
            read = " ".join(f"--{key}" for key in settings)
            warnings.warn(
                f"Config read {read} from sys.argv, as RecBole's Config does; recbole_mm 0.2 "
                f"will not. Pass the settings as Config(..., overrides=recbole_mm.config."
                f"parse_overrides(sys.argv[1:])), or run_recbole_mm(..., overrides=...).",
                FutureWarning,
                stacklevel=4,  # the code that built the Config
            )
        return settings

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        dataset_file = properties.dataset_file(dataset)
        for file in (properties.overall_file(), properties.model_file(model), dataset_file):
            if file.is_file():
                loaded = self._update_internal_config_dict(str(file)) or {}
                if file == dataset_file:
                    self.parameters["Dataset"] += [
                        k for k in loaded if k not in self.parameters["Dataset"]
                    ]

    def _load_config_files(self, file_list):
        settings = {}
        for file in file_list or []:
            path = Path(file)
            if not path.is_file():
                raise ConfigError(
                    f"config_files: {file} does not exist. Give the path of a YAML file "
                    f"(several paths: separated by spaces)."
                )
            try:
                loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=self.yaml_loader)
            except yaml.YAMLError as err:
                where = getattr(err, "problem_mark", None)
                line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ConfigError(
                    f"config_files: {file} is not valid YAML{line}: {problem}. Each line is "
                    f"'key: value' (e.g. 'learning_rate: 0.001'); lists are [a, b]."
                ) from err
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"config_files: {file} holds a {type(loaded).__name__}, not 'key: value' "
                    f"lines (e.g. 'learning_rate: 0.001')."
                )
            settings.update(loaded)
        return settings

    def _source_of(self, key: str) -> str:
        if key in self.cmd_config_dict:
            return "on the command line"
        if key in self.variable_config_dict:
            return "in config_dict"
        if key in self.file_config_dict:
            return "in config_files"
        return "in the property files"

    def _check_settings(self, final: dict) -> None:
        """Warn about unknown keys the user set; refuse bad values of common settings."""
        warn_unknown_keys(self.cmd_config_dict, "set on the command line")
        warn_unknown_keys(self.file_config_dict, "set in config_files")
        warn_unknown_keys(self.variable_config_dict, "set in config_dict")
        for key, (check, example) in VALUE_CHECKS.items():
            if key not in final or final[key] is None:
                continue
            problem = check(final[key])
            if problem:
                raise ConfigError(
                    f"{key}={final[key]!r} ({self._source_of(key)}) {problem}, e.g. "
                    f"{key}={example}."
                )

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        self._check_settings(final)
        # RecBole's sequential models default to loss_type CE, which RecBole rejects unless
        # train_neg_sample_args is None, yet its overall.yaml sets a uniform sampler: without
        # this, `run_recbole --model=SASRec` fails out of the box. A user's explicit value wins.
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final

    def _set_default_parameters(self):
        from recbole_mm.data.embedded import default_cache_dir, is_embedded

        # Embedded datasets are built into a cache folder unless the user names a data_path.
        if is_embedded(self.dataset) and "data_path" not in self.external_config_dict:
            self.final_config_dict["data_path"] = str(default_cache_dir() / "datasets")
        super()._set_default_parameters()
