"""Every accommodation of RecBole 1.2.1 to today's scientific Python, in one place.

RecBole 1.2.1 (the newest release) predates the libraries below. Each breakage is handled once,
by a version pin in setup.cfg where a pin does the job and by the smallest patch here where it
cannot, and each has a test in tests/test_compat.py that fails without the fix. The patches run
when ``recbole_mm`` is imported (``recbole_mm.registry``).

=====================  ============================================  ==========================
breakage               symptom in RecBole 1.2.1                      fix
=====================  ============================================  ==========================
numpy >= 2             ``Config()`` aliases ``np.float_``,            :func:`restore_numpy_
                       ``np.complex_`` and ``np.unicode_``, which     aliases`
                       numpy 2 removed (RecBole#2215)
pandas >= 3            copy-on-write turns ``df[f].fillna(..,         pin ``pandas<3``
                       inplace=True)`` into a no-op: empty
                       ``token_seq``/``float_seq`` cells crash the
                       loader and NaNs stay unfilled (silently)
scipy >= 1.13          LightGCN, NGCF, NCL, GCMC, SpectralCF, KGIN,  :func:`restore_dok_update`
                       MCCLK call the removed private
                       ``dok_matrix._update`` (RecBole#2034)
ray                    RecBole requires ``ray<=2.6.3``, which has    install RecBole with
                       no wheel for Python >= 3.12 (RecBole#1820),   ``--no-deps``;
                       and ``recbole.quick_start`` imports           :func:`import_recbole_
                       ``ray.tune`` (about a second) for one         quick_start`
                       ``tune.report`` in ``objective_function``
ray 2.6.3 (the         it reads ``np.bool8``, which numpy 2          pin ``numpy<2`` in the
``ray`` extra)         removed (RecBole#2078)                        extra
hyperopt >= 0.2.7      ``HyperTuning``'s exhaustive search hands      pin ``hyperopt==0.2.5``
                       hyperopt a ``RandomState``; newer hyperopt     (RecBole's own extra)
                       calls ``rng.integers`` on it
setuptools >= 81       hyperopt 0.2.5 (and ray 2.6.3) import          pin ``setuptools<81``
                       ``pkg_resources``, which setuptools 81
                       dropped; torch on Python >= 3.12 requires
                       setuptools, so pip installs the newest
torch >= 2.6           ``torch.load`` defaults to ``weights_only=True`` :func:`patch_checkpoint_loading`
                       and refuses RecBole's checkpoints, which
                       pickle the ``Config`` (RecBole#2215): the
                       best-model reload after training and
                       ``load_data_and_model`` fail. Allow-listing
                       cannot help: the Config holds arbitrary
                       classes (the model class, enums, numpy
                       objects)
anomaly detection      ``recbole/model/sequential_recommender/        :func:`undo_sine_anomaly_detection`
                       sine.py`` calls ``torch.autograd.
                       set_detect_anomaly(True)`` at import; any
                       sequential model imports it, and every later
                       forward/backward in the process runs with
                       anomaly checks (SASRec trains about 1.7x
                       slower on CPU)
unknown model name     RecBole's ``get_model`` imports its lightgbm  ``recbole_mm.utils.get_model``
                       wrapper while searching and reports ``No      checks the name first
                       module named 'lightgbm'``
ray 2.6.3 without      ``tune.run`` finishes every trial, then its   :func:`patch_ray_local_
pyarrow                ``ExperimentAnalysis`` asks pyarrow whether   experiment_analysis`
                       the *local* results folder is a directory
                       and raises "requires pyarrow" (pyarrow is in
                       ``ray[tune]``, RecBole requires plain ``ray``)
transformers >= 5      a model's key/value cache is passed and        :func:`cache_argument`,
                       returned as ``cache``, no longer              :func:`returned_cache`
                       ``past_key_values`` (a deprecated alias,
                       removed in 5.40); 4.x knows only the old name
=====================  ============================================  ==========================

No pin can fix numpy, scipy or ray: the project must run on Python 3.12 and on current numpy and
scipy releases. The numpy and scipy patches only add back the names RecBole reads, with their
former meaning, where the installed release lacks them; they change nothing on older releases.

A pin cannot fix torch either. RecBole's trainers all
live in ``recbole.trainer.trainer`` and reach torch through that module's global name ``torch``.
:func:`patch_checkpoint_loading` rebinds that one name, in that module only, to a view of torch
whose ``load`` passes ``weights_only=False`` unless the caller chose otherwise; RecBole's
``load_data_and_model`` is replaced by ours (``recbole_mm.registry``), which reads checkpoints
through ``recbole_mm.trainer.checkpoint.read_checkpoint``. Every other ``torch.load`` in the
process keeps torch's safe default. RecBole's checkpoints contain pickled objects: load them only
from trusted sources. The trainers of recbole_mm's entry points write checkpoints without pickled
objects (``recbole_mm.trainer.checkpoint``), which load with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
from typing import Any

import numpy as np
import torch

# numpy 1.x aliases that numpy 2 removed and RecBole's ``Config.compatibility_settings`` reads
# (it then sets ``np.float = np.float_`` and so on, for its own code).
NUMPY_REMOVED_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def restore_numpy_aliases() -> None:
    """Give numpy >= 2 back the aliases RecBole's Config reads; no-op on numpy 1.x."""
    for alias, target in NUMPY_REMOVED_ALIASES.items():
        if not hasattr(np, alias):
            setattr(np, alias, getattr(np, target))


def dok_update(matrix: Any, entries: dict) -> None:
    """``matrix[i, j] = v`` for every ``(i, j): v`` of ``entries``, through public indexing.

    What ``dok_matrix._update`` did before scipy 1.13 (RecBole's graph models fill their
    adjacency with it), with the bounds checks of public assignment.
    """
    if not entries:
        return
    index = np.asarray(list(entries.keys()), dtype=np.int64)  # [nnz, 2]
    matrix[index[:, 0], index[:, 1]] = np.fromiter(entries.values(), dtype=matrix.dtype)


def restore_dok_update() -> None:
    """Give scipy >= 1.13's ``dok_matrix`` the ``_update`` that RecBole's graph models call."""
    from scipy.sparse import dok_matrix

    if not hasattr(dok_matrix, "_update"):
        dok_matrix._update = dok_update


def _report_outside_ray(*args: Any, **kwargs: Any) -> None:
    """Ray's ``tune.report`` outside a Ray trial does nothing; without Ray there is no trial."""


class _RayTuneOnDemand(types.ModuleType):
    """``ray.tune`` as ``recbole.quick_start`` sees it: Ray's own, imported on first use.

    Without Ray, ``report`` (RecBole's only use, at the end of ``objective_function``) does
    nothing, as Ray's does outside a trial; anything else says how to install Ray.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # probes by inspect, pickle, copy: no reason to load Ray
            raise AttributeError(name)
        try:
            tune = importlib.import_module("ray.tune")
        except ModuleNotFoundError as err:
            if err.name not in ("ray", "ray.tune"):
                raise  # Ray is installed but cannot be imported: say why
            if name == "report":
                return _report_outside_ray
            raise AttributeError(
                f"ray.tune.{name} needs Ray: pip install 'recbole_mm[ray]' (Python < 3.12)"
            ) from None
        return getattr(tune, name)


RECBOLE_QUICK_START = "recbole.quick_start.quick_start"


def import_recbole_quick_start() -> types.ModuleType:
    """Import ``recbole.quick_start`` without importing Ray, which it may lack.

    Its module-level ``from ray import tune`` receives :class:`_RayTuneOnDemand` from a ``ray``
    entry that exists in ``sys.modules`` only while ``quick_start.py`` runs; RecBole's own
    imports are loaded before, so no other module sees the entry. Where Ray is already
    imported, RecBole gets it as usual.
    """
    if RECBOLE_QUICK_START in sys.modules or sys.modules.get("ray") is not None:
        return importlib.import_module(RECBOLE_QUICK_START)
    for name in ("torch.distributed", "recbole.config", "recbole.data.transform", "recbole.utils"):
        importlib.import_module(name)
    blocked = "ray" in sys.modules  # a None entry: someone chose "ray cannot be imported"
    stand_in = types.ModuleType("ray")
    stand_in.tune = _RayTuneOnDemand("ray.tune")
    sys.modules["ray"] = stand_in
    try:
        return importlib.import_module(RECBOLE_QUICK_START)
    finally:
        if blocked:
            sys.modules["ray"] = None
        else:
            del sys.modules["ray"]


# RecBole's module whose trainers read RecBole's own full checkpoints (state + pickled Config).
RECBOLE_CHECKPOINT_READER = "recbole.trainer.trainer"


def load_recbole_checkpoint(path: str, map_location: Any = None) -> dict:
    """Read a RecBole-format checkpoint (it pickles the Config: trusted files only)."""
    return torch.load(path, map_location=map_location, weights_only=False)


class _TorchWithTrustedLoad(types.ModuleType):
    """torch as seen by RecBole's checkpoint readers: identical except for ``load``."""

    def __init__(self) -> None:
        super().__init__("torch", torch.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    @functools.wraps(torch.load)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def undo_sine_anomaly_detection() -> None:
    """Import RecBole's sequential models now and restore the anomaly-detection state after.

    Importing the package runs ``sine.py``'s module-level ``set_detect_anomaly(True)`` once; the
    state the user had before (normally off) is put back, and later imports are cached no-ops.
    """
    enabled = torch.is_anomaly_enabled()
    importlib.import_module("recbole.model.sequential_recommender")
    torch.autograd.set_detect_anomaly(enabled)


def patch_checkpoint_loading() -> None:
    """Let RecBole's trainers resume and reload their checkpoints on torch>=2.6."""
    module = importlib.import_module(RECBOLE_CHECKPOINT_READER)
    if not isinstance(module.torch, _TorchWithTrustedLoad):
        module.torch = _TorchWithTrustedLoad()


def _local_is_directory(remote_is_directory):
    def is_directory(uri: str) -> bool:
        import os

        if "://" not in str(uri):
            if not os.path.exists(uri):
                raise FileNotFoundError(uri)
            return os.path.isdir(uri)
        return remote_is_directory(uri)

    is_directory.recbole_mm = True
    return is_directory


def patch_ray_local_experiment_analysis() -> None:
    """Let ray 2.6.3's ``ExperimentAnalysis`` read a local results folder without pyarrow.

    Ray checks whether the experiment path is a directory through pyarrow's file systems even
    when the path is local. Where pyarrow is installed nothing changes; without it, local paths
    are checked with ``os.path`` and remote URIs still go to Ray (which then asks for pyarrow).
    """
    try:
        import pyarrow.fs  # noqa: F401

        return
    except ImportError:
        pass
    module = importlib.import_module("ray.tune.analysis.experiment_analysis")
    if not getattr(module.is_directory, "recbole_mm", False):
        module.is_directory = _local_is_directory(module.is_directory)


@functools.cache
def _cache_parameter(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(model: Any, cache: Any) -> dict:
    """The keyword that hands ``cache`` (a key/value cache) to a ``transformers`` model's
    ``forward``: ``{"cache": cache}`` on transformers >= 5, ``{"past_key_values": cache}``
    before; ``{}`` for no cache."""
    if cache is None:
        return {}
    return {_cache_parameter(type(model)): cache}


def returned_cache(output: Any) -> Any:
    """The key/value cache of a ``transformers`` model output (``cache`` on transformers >= 5,
    ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
