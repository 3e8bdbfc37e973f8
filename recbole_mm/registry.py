"""Make RecBole's own entry points accept recbole_mm's models and datasets by name.

RecBole finds a model by importing ``recbole.model.<kind>.<name lower-cased>``, a model's
dataset class as ``recbole.data.dataset.<Model>Dataset`` and its trainer as
``recbole.trainer.<Model>Trainer``. :func:`register_with_recbole` puts our classes in those
places, and points ``recbole.quick_start``'s ``Config``, ``create_dataset``, ``get_model`` and
``get_trainer`` at ours (drop-in supersets: RecBole's models behave exactly as before), so that
``recbole.quick_start.run_recbole``, ``objective_function`` (and with it
``recbole.trainer.HyperTuning``) and ``load_data_and_model`` (replaced by ours, which also reads
checkpoints on torch>=2.6) work with our models and read our property files. It runs once, when
``recbole_mm`` is imported, after the compatibility patches of ``recbole_mm.compat``; it imports
``recbole.quick_start`` without Ray, which is imported only when a Ray search starts.
"""

from __future__ import annotations

import importlib
import sys

from recbole.utils import ModelType

from recbole_mm import compat

_RECBOLE_KIND = {
    ModelType.GENERAL: "general_recommender",
    ModelType.SEQUENTIAL: "sequential_recommender",
}


def register_with_recbole() -> None:
    compat.restore_numpy_aliases()
    compat.restore_dok_update()
    from recbole_mm import config, quick_start, utils

    dataset_module = importlib.import_module("recbole.data.dataset")
    trainer_module = importlib.import_module("recbole.trainer")
    ours = importlib.import_module("recbole_mm.trainer")
    for name, model_class in utils.recbole_mm_models().items():
        kind = _RECBOLE_KIND[model_class.type]
        sys.modules[f"recbole.model.{kind}.{name.lower()}"] = sys.modules[model_class.__module__]
        setattr(dataset_module, f"{name}Dataset", utils.dataset_class_for(model_class))
        if hasattr(ours, f"{name}Trainer"):
            setattr(trainer_module, f"{name}Trainer", getattr(ours, f"{name}Trainer"))
        elif getattr(model_class, "stages", None):
            setattr(trainer_module, f"{name}Trainer", ours.MultiStageTrainer)

    recbole_quick_start = compat.import_recbole_quick_start()
    recbole_quick_start.Config = config.Config
    recbole_quick_start.create_dataset = utils.create_dataset
    recbole_quick_start.data_preparation = utils.data_preparation
    recbole_quick_start.get_model = utils.get_model
    recbole_quick_start.get_trainer = utils.get_trainer
    # RecBole's own reader imports torch inside the function, out of compat's reach.
    recbole_quick_start.load_data_and_model = quick_start.load_data_and_model
    sys.modules["recbole.quick_start"].load_data_and_model = quick_start.load_data_and_model
    compat.patch_checkpoint_loading()
    compat.undo_sine_anomaly_detection()
