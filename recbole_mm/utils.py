"""Lookup of models, trainers and datasets: recbole_mm first, then RecBole.

These functions mirror ``recbole.utils.get_model``, ``recbole.utils.get_trainer``,
``recbole.data.create_dataset`` and ``recbole.data.data_preparation`` and add what RecBole
lacks: a clear error for unknown model names (RecBole reports a missing ``lightgbm``), the
embedded dataset built on first use, a clear error naming the build command when a dataset's
files are absent, and a check that no split is empty. The model lookup lives in
:mod:`recbole_mm.lookup` (which ``recbole_mm.config`` imports without the trainers) and is
importable from here as well.
"""

from __future__ import annotations

from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mm import trainer as trainers
from recbole_mm.data.dataset import (
    MultimodalDataset,
    MultimodalSequentialDataset,
    prepare_dataset_files,
)
from recbole_mm.lookup import UnknownModelError, get_model, recbole_mm_models, recbole_models

__all__ = [
    "UnknownModelError",
    "create_dataset",
    "data_preparation",
    "dataset_class_for",
    "full_sort_users_per_batch",
    "get_model",
    "get_trainer",
    "recbole_mm_models",
    "recbole_models",
    "size_full_sort_batches",
]


def get_trainer(model_type: ModelType, model_name: str) -> type:
    """The trainer class for a model: ``recbole_mm.trainer.<Model>Trainer``, else
    ``MultiStageTrainer`` for our models that declare ``stages``, else RecBole's."""
    if hasattr(trainers, model_name + "Trainer"):
        return getattr(trainers, model_name + "Trainer")
    if getattr(recbole_mm_models().get(model_name), "stages", None):
        return trainers.MultiStageTrainer
    return recbole_get_trainer(model_type, model_name)


def dataset_class_for(model_class: type) -> type:
    """The dataset class one of our models is built on (multimodal, by model type)."""
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
    evaluation batches are sized in users (:func:`size_full_sort_batches`). With
    ``new_item_ratio`` the split is the strict new-item split (:mod:`recbole_mm.data.new_items`)."""
    size_full_sort_batches(config, dataset)
    if config["new_item_ratio"] is not None:  # the strict new-item split (data/new_items.py)
        from recbole_mm.data.new_items import new_item_data_preparation

        train_data, valid_data, test_data = new_item_data_preparation(config, dataset)
    else:
        train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    for phase, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        if len(loader._dataset) == 0:
            raise ValueError(
                f"The {phase} split of dataset '{config['dataset']}' is empty under "
                f"eval_args={config['eval_args']}: the dataset is too small or too filtered for "
                f"this protocol. Use more data, looser filters, or another split."
            )
    return train_data, valid_data, test_data
