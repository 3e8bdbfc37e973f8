"""Locate the project's property files, whether recbole_mm is installed editable or not.

In a source checkout (and an editable install) they are the ``properties/`` folder beside the
package. A regular install copies them to ``<prefix>/share/recbole_mm/properties`` (setup.cfg,
``data_files``); ``<prefix>`` is found from the package's own location, so virtual environments,
``--user`` and ``--prefix`` installs all work.
"""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def properties_dir() -> Path:
    """The folder holding ``overall.yaml``, ``model/``, ``dataset/`` and ``hyper/``."""
    candidates = [_PACKAGE_DIR.parent / "properties"]
    # <prefix>/lib/pythonX.Y/site-packages/recbole_mm -> <prefix>
    if len(_PACKAGE_DIR.parents) > 3:
        candidates.append(_PACKAGE_DIR.parents[3] / "share" / "recbole_mm" / "properties")
    for candidate in candidates:
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "recbole_mm's property files were not found in any of "
        f"{[str(c) for c in candidates]}; reinstall the package with `pip install .`."
    )


def overall_file() -> Path:
    return properties_dir() / "overall.yaml"


def model_file(model: str) -> Path:
    return properties_dir() / "model" / f"{model}.yaml"


def tuned_file(model: str, dataset: str) -> Path:
    """Settings of ``model`` chosen on validation for ``dataset`` (may not exist)."""
    return properties_dir() / "model" / model / f"{dataset}.yaml"


def dataset_file(dataset: str) -> Path:
    return properties_dir() / "dataset" / f"{dataset}.yaml"


def hyper_file(model: str) -> Path:
    return properties_dir() / "hyper" / f"{model}.hyper"


def configured_datasets() -> list[str]:
    """Names of the datasets that have a properties/dataset/<name>.yaml."""
    return sorted(p.stem for p in (properties_dir() / "dataset").glob("*.yaml"))
