"""Lookup of models, trainers and datasets: recbole_mm first, then RecBole.

These functions mirror ``recbole.utils.get_model``, ``recbole.utils.get_trainer``,
``recbole.data.create_dataset`` and ``recbole.data.data_preparation`` and add what RecBole
lacks: a clear error for unknown model names (RecBole reports a missing ``lightgbm``), the
embedded dataset built on first use, a clear error naming the build command when a dataset's
files are absent, and a check that no split is empty.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mm.data.dataset import prepare_dataset_files

# Our model packages, by RecBole model type; each lists its models in __all__.
MODEL_PACKAGES = {
    ModelType.GENERAL: "recbole_mm.model.general_recommender",
    ModelType.SEQUENTIAL: "recbole_mm.model.sequential_recommender",
}
RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


class UnknownModelError(ValueError):
    """A model name that neither recbole_mm nor RecBole defines."""


@functools.lru_cache(maxsize=1)
def recbole_mm_models() -> dict[str, type]:
    """Our models by name."""
    models = {}
    for package in MODEL_PACKAGES.values():
        module = importlib.import_module(package)
        models.update({name: getattr(module, name) for name in module.__all__})
    return models


def _recbole_model_dir() -> Path:
    return Path(importlib.util.find_spec("recbole.model").submodule_search_locations[0])


@functools.lru_cache(maxsize=1)
def recbole_models() -> list[str]:
    """Names of RecBole's own models (the optional lightgbm/xgboost wrappers included)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for package in RECBOLE_MODEL_PACKAGES:
        folder = _recbole_model_dir() / package
        for file in sorted(folder.glob("*.py")):
            if file.stem == "__init__":
                continue
            if package == "exlib_recommender":
                # Importing these needs lightgbm / xgboost; their class names are fixed.
                names.append({"lightgbm": "LightGBM", "xgboost": "XGBoost"}.get(file.stem, ""))
                continue
            module = importlib.import_module(f"recbole.model.{package}.{file.stem}")
            names += [
                name
                for name, obj in vars(module).items()
                if isinstance(obj, type)
                and issubclass(obj, AbstractRecommender)
                and obj.__module__ == module.__name__
                and name.lower() == file.stem
            ]
    return sorted(n for n in names if n)


def get_model(model_name: str) -> type:
    """The model class named ``model_name``: recbole_mm's, else RecBole's."""
    ours = recbole_mm_models()
    if model_name in ours:
        return ours[model_name]
    file = model_name.lower()
    for package in RECBOLE_MODEL_PACKAGES:
        if not (_recbole_model_dir() / package / f"{file}.py").is_file():
            continue
        try:
            module = importlib.import_module(f"recbole.model.{package}.{file}")
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"RecBole's model {model_name} needs the package '{err.name}': "
                f"pip install {err.name}"
            ) from err
        if hasattr(module, model_name):
            return getattr(module, model_name)
    raise UnknownModelError(
        f"Unknown model '{model_name}' (names are case-sensitive). recbole_mm models: "
        f"{', '.join(sorted(ours))}. RecBole models: {', '.join(recbole_models())}."
    )


def get_trainer(model_type: ModelType, model_name: str) -> type:
    """The trainer class for a model: ``recbole_mm.trainer.<Model>Trainer``, else
    ``MultiStageTrainer`` for our models that declare ``stages``, else RecBole's."""
    trainers = importlib.import_module("recbole_mm.trainer")
    if hasattr(trainers, model_name + "Trainer"):
        return getattr(trainers, model_name + "Trainer")
    if getattr(recbole_mm_models().get(model_name), "stages", None):
        return trainers.MultiStageTrainer
    return recbole_get_trainer(model_type, model_name)


def dataset_class_for(model_class: type) -> type:
    """The dataset class one of our models is built on (multimodal, by model type)."""
    from recbole_mm.data.dataset import MultimodalDataset, MultimodalSequentialDataset

    explicit = getattr(model_class, "dataset_class", None)
    if explicit is not None:
        return explicit
    if model_class.type == ModelType.SEQUENTIAL:
        return MultimodalSequentialDataset
    return MultimodalDataset


def create_dataset(config):
    """Build (embedded datasets), check and load the dataset ``config`` names.

    Our models get a multimodal dataset (the class registered with RecBole under
    ``<Model>Dataset``); RecBole's models get RecBole's dataset classes and ignore the features.
    """
    prepare_dataset_files(config)
    try:
        return recbole_create_dataset(config)
    except ValueError as err:
        if "Some feat is empty" not in str(err):
            raise
        raise ValueError(
            f"Dataset '{config['dataset']}' is empty after filtering. Loosen the filters "
            f"(user_inter_num_interval={config['user_inter_num_interval']}, "
            f"item_inter_num_interval={config['item_inter_num_interval']}, "
            f"val_interval={config['val_interval']}) or check the atomic files."
        ) from err


def full_sort_users_per_batch(n_users: int, n_items: int, *, max_scores: int) -> int:
    """Users per full-sort evaluation batch: as many as keep ``users x items <= max_scores``,
    at least one and at most every user."""
    if not isinstance(max_scores, int) or max_scores < 1:
        raise ValueError(
            f"full_sort_max_scores = {max_scores!r} must be a positive integer (scores held per "
            f"full-sort evaluation batch; 16777216 is 64 MiB of float32)."
        )
    return max(1, min(n_users, max_scores // max(n_items, 1)))


def size_full_sort_batches(config, dataset) -> None:
    """Size RecBole's full-sort evaluation batches in users (issue: eval_batch_size counts
    user x item pairs there, so above 4096 items RecBole evaluates one user per batch).

    Applies to non-sequential models in full-ranking mode when the user has not set
    ``eval_batch_size`` (in a config file, dict or on the command line): ``eval_batch_size``
    becomes ``users x n_items`` with ``full_sort_batch_users`` users, or, when that is ~, as
    many users as fit in ``full_sort_max_scores`` scores. An explicit ``eval_batch_size`` keeps
    RecBole's meaning. Sequential loaders already count users.
    """
    if "eval_batch_size" in config.external_config_dict:
        return
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return
    mode = (config["eval_args"] or {}).get("mode", "full")
    if "full" not in (mode.values() if isinstance(mode, dict) else [mode]):
        return
    users = config["full_sort_batch_users"]
    if users is None:
        users = full_sort_users_per_batch(
            dataset.user_num, dataset.item_num, max_scores=config["full_sort_max_scores"]
        )
    elif not isinstance(users, int) or users < 1:
        raise ValueError(
            f"full_sort_batch_users = {users!r} must be a positive integer or ~ (auto)."
        )
    config["eval_batch_size"] = users * dataset.item_num


def data_preparation(config, dataset):
    """RecBole's split and dataloaders, refusing splits left empty by the protocol; full-sort
    evaluation batches are sized in users (:func:`size_full_sort_batches`)."""
    size_full_sort_batches(config, dataset)
    train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    for phase, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        if len(loader._dataset) == 0:
            raise ValueError(
                f"The {phase} split of dataset '{config['dataset']}' is empty under "
                f"eval_args={config['eval_args']}: the dataset is too small or too filtered for "
                f"this protocol. Use more data, looser filters, or another split."
            )
    return train_data, valid_data, test_data
