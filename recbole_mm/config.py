"""RecBole's Config, extended with recbole_mm's property files.

Precedence, lowest first (RecBole's own rule, with our files inside the "internal" layer):
RecBole's internal properties (overall, model, dataset, model-type quick-start files) <
recbole_mm's ``properties/overall.yaml`` < ``properties/model/<Model>.yaml`` <
``properties/dataset/<dataset>.yaml`` < config files < config dict < command line.

The command line reaches a ``Config`` only as its ``overrides`` argument, parsed once by
:func:`parse_overrides`: this Config does not read ``sys.argv`` when it is given them.

Renamed settings (:data:`ALIASES`) keep working for one release: the final configuration holds
the new key only, with a warning that names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_mm import properties
from recbole_mm.data.modalities import default_modality_roles, role_tags
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
def current_keys() -> frozenset[str]:
    """Every configuration key RecBole or recbole_mm reads: RecBole's argument lists, the keys
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


def known_keys() -> frozenset[str]:
    """:func:`current_keys` and the old names that still work (:data:`ALIASES`)."""
    return current_keys() | {alias.old for alias in ALIASES}


def nearest_key(key: str) -> str | None:
    """The current key closest to ``key`` (difflib), or None when nothing is close."""
    close = difflib.get_close_matches(key, current_keys(), n=1, cutoff=0.6)
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


# -- renamed settings ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Alias:
    """A setting that works under its old name for one more release.

    ``translate(old_value, final)`` gives the new key's value (default: the old value, for a
    plain rename). An alias that ``amends`` edits the new key's current value, whoever set it;
    the others replace it unless the user sets the new key at a layer at least as high.
    """

    old: str
    new: str
    models: tuple[str, ...]  # the models that read the old key
    translate: Callable[[Any, dict], Any] | None = None
    amends: bool = False


def _listed_modalities(*, empty_means_all: bool) -> Callable[[Any, dict], Any]:
    """``[a, b]`` -> ``{a: a, b: b}``; ``~`` (and ``[]`` where it meant all) -> ``~``."""

    def translate(value, final):
        names = [] if value is None else [value] if isinstance(value, str) else list(value)
        if value is None or (not names and empty_means_all):
            return None
        return {name: name for name in names}

    return translate


_IMECD_ROLES = {"text": "textual", "image": "visual"}  # imecd_modalities' roles -> IMECD's


def _imecd_roles(value, final):
    if value is None:  # each role took the modality of its own name, when the dataset had it
        declared = final.get("modalities") or {}
        return {new: (old if old in declared else None) for old, new in _IMECD_ROLES.items()}
    if not isinstance(value, dict) or not set(value) <= set(_IMECD_ROLES):
        raise ConfigError(
            f"imecd_modalities = {value!r} must map the roles text and image to dataset "
            "modalities. It is replaced by modality_roles, whose roles are textual and visual: "
            "e.g. --modality_roles=\"{'textual': 'text', 'visual': 'image'}\"."
        )
    return {new: value.get(old) for old, new in _IMECD_ROLES.items()}


def _cemg_switch(role: str) -> Callable[[Any, dict], Any]:
    """``use_<role>: False`` -> the role mapped to null in ``modality_roles``."""

    def translate(value, final):
        current = final.get("modality_roles")
        if value or value is None:
            return current
        if current is None:  # the default mapping, made explicit (roles as CEMG declares them)
            declared = final.get("modalities") or {}
            defaults = default_modality_roles(
                ("visual", "textual"), list(declared), tags=role_tags(declared)
            )
            current = {r: m or r for r, m in defaults.items()}
        return {**current, role: None}

    return translate


def _as_list(value, final):
    """One width -> a list of widths."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


# Old key -> new key, per model. docs/config_keys.md lists them.
ALIASES: tuple[Alias, ...] = (
    # one name per idea across the models (docs/config_keys.md, "Shared keys")
    Alias("gcn_layers", "n_layers", ("CEMG",)),
    Alias("n_graph_layers", "n_layers", ("MMGRec",)),
    Alias("n_semantic_levels", "rq_levels", ("MMGRec",)),
    Alias("codebook_size", "rq_codebook_size", ("MMGRec",)),
    Alias("rqvae_hidden_size", "rq_hidden_sizes", ("MMGRec",), _as_list),
    Alias("rqvae_latent_dim", "rq_latent_dim", ("MMGRec",)),
    Alias("rqvae_beta", "rq_commitment_weight", ("MMGRec",)),
    Alias("lambda_q", "rq_commitment_weight", ("CEMG",)),
    Alias("rqvae_kmeans_init", "rq_kmeans_init", ("MMGRec",)),
    Alias("rqvae_dead_code_reset", "rq_dead_code_reset", ("MMGRec",)),
    Alias("rqvae_input", "rq_input", ("MMGRec",)),
    Alias("max_history", "history_length", ("MMGRec",)),
    Alias("gtc_diffusion_steps", "diffusion_steps", ("GTC",)),
    Alias("n_steps", "diffusion_steps", ("IMECD",)),
    Alias("gtc_beta_start", "beta_start", ("GTC",)),
    Alias("gtc_beta_end", "beta_end", ("GTC",)),
    Alias("gtc_eval_sample_steps", "diffusion_eval_steps", ("GTC",)),
    Alias("imecd_eval_steps", "diffusion_eval_steps", ("IMECD",)),
    Alias("lambda_q", "vq_injection_weight", ("IMECD",)),
    Alias("n_codes", "vq_codebook_size", ("IMECD",)),
    # content roles (docs/config_keys.md, "Content roles")
    Alias("gtc_modalities", "modality_roles", ("GTC",), _listed_modalities(empty_means_all=False)),
    Alias(
        "mmgrec_modalities", "modality_roles", ("MMGRec",), _listed_modalities(empty_means_all=True)
    ),
    Alias("vbpr_modalities", "modality_roles", ("VBPR",), _listed_modalities(empty_means_all=True)),
    Alias("imecd_modalities", "modality_roles", ("IMECD",), _imecd_roles),
    Alias("use_visual", "modality_roles", ("CEMG",), _cemg_switch("visual"), amends=True),
    Alias("use_textual", "modality_roles", ("CEMG",), _cemg_switch("textual"), amends=True),
)


def apply_aliases(
    final: dict,
    *,
    model: str,
    keep_new: Callable[[Alias], bool] = lambda alias: False,
    report: Callable[[Alias, Any, Any, bool], None] | None = None,
) -> None:
    """Translate ``model``'s renamed settings in ``final``, in place; the old keys are removed.

    Args:
        keep_new: whether an alias yields to the new key's current value.
        report: called with ``(alias, old value, new value, kept_new)`` for each old key found.
    """
    for alias in ALIASES:
        if alias.old not in final or model not in alias.models:
            continue
        value = final.pop(alias.old)
        kept = not alias.amends and keep_new(alias)
        if not kept:
            final[alias.new] = alias.translate(value, final) if alias.translate else value
        if report is not None:
            report(alias, value, final.get(alias.new), kept)


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
        files = [properties.overall_file(), properties.model_file(model), dataset_file]
        # The settings chosen on validation for this model on this dataset come last, unless
        # the user asks for the paper's method (tuned_settings: False).
        tuned = properties.tuned_file(model, dataset)
        self.tuned_file = None
        if self.external_config_dict.get("tuned_settings", True) and tuned.is_file():
            files.append(tuned)
            self.tuned_file = str(tuned)
        for file in files:
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

    def _layer(self, key: str) -> int:
        """3 command line, 2 config dict, 1 config files, 0 property files (or unset)."""
        for rank, layer in (
            (3, self.cmd_config_dict),
            (2, self.variable_config_dict),
            (1, self.file_config_dict),
        ):
            if key in layer:
                return rank
        return 0

    def _apply_aliases(self, final: dict) -> None:
        """Translate renamed settings; a new key the user sets as high as the old one wins."""

        def keep_new(alias):
            layer = self._layer(alias.new)
            return layer > 0 and layer >= self._layer(alias.old)

        def report(alias, value, new_value, kept):
            if alias.old in _warned:
                return
            _warned.add(alias.old)
            if kept:
                logger.warning(
                    "Setting '%s' (%s) is the old name of '%s', which is also set (%s): %s = %r "
                    "is used and %s ignored.",
                    alias.old,
                    self._source_of(alias.old),
                    alias.new,
                    self._source_of(alias.new),
                    alias.new,
                    new_value,
                    alias.old,
                )
                return
            logger.warning(
                "Setting '%s' (%s) is renamed '%s' and read as %s = %r. The old name works in "
                "this release and is removed in the next: write %s instead "
                "(docs/config_keys.md).",
                alias.old,
                self._source_of(alias.old),
                alias.new,
                alias.new,
                new_value,
                alias.new,
            )

        apply_aliases(final, model=self.model, keep_new=keep_new, report=report)

    def __setstate__(self, state):
        # A configuration saved in a checkpoint by an earlier release holds the old names:
        # they were what that release read, so they win.
        self.__dict__.update(state)
        final = self.__dict__.get("final_config_dict")
        if final is not None:
            apply_aliases(final, model=final.get("model"))

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
        self._apply_aliases(final)
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
