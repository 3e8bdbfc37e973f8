"""Installing recbole_mm: RecBole's requirements without ray, and a regular install's files."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_regular_install_finds_properties(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            # Without it pip first uninstalls the recbole_mm of the running environment.
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    site = (
        prefix
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    code = (
        "import recbole_mm, recbole_mm.properties as p\n"
        "print(recbole_mm.__file__)\nprint(p.properties_dir())\nprint(p.configured_datasets())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    package, folder, datasets = done.stdout.splitlines()
    assert package.startswith(str(prefix)) and folder.startswith(str(prefix))
    assert (Path(folder) / "model" / "VBPR.yaml").is_file()
    assert "ml-100k-mm" in datasets


def _names(distribution: str) -> set[str]:
    """Names of a distribution's requirements that are not behind an extra."""
    names = set()
    for requirement in map(Requirement, importlib.metadata.requires(distribution)):
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(requirement.name.lower())
    return names


def test_recbole_requirements_are_ours_except_ray():
    # RecBole is installed with --no-deps (README): setup.cfg lists what RecBole needs instead.
    assert "recbole" not in _names("recbole_mm")  # it would make pip resolve ray<=2.6.3 again
    assert _names("recbole") - _names("recbole_mm") == {"ray"}


def test_import_without_recbole_says_how_to_install_it():
    code = "import sys\nsys.modules['recbole'] = None\nimport recbole_mm"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "pip install --no-deps recbole==1.2.1" in done.stderr
