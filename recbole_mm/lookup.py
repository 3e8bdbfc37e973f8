"""Model classes by name: recbole_mm's first, then RecBole's.

:func:`get_model` mirrors ``recbole.utils.get_model`` and reports an unknown name clearly
(RecBole's imports its lightgbm wrapper while searching and reports ``No module named
'lightgbm'``). Of recbole_mm it imports only the model packages, so that ``recbole_mm.config``
resolves model names without importing the trainers, whose checkpoints rebuild a ``Config``.
``recbole_mm.utils`` (trainers and datasets) offers the same functions.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

from recbole.utils import ModelType

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
