"""A regular (non-editable) install finds the property files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
