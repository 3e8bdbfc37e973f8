"""run_recbole_mm.py as a user calls it (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY, tiny_config

from recbole_mm.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "run_recbole_mm.py"


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_help_lists_models_and_datasets(tmp_path):
    done = _run("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "VBPR" in done.stdout and "ml-100k-mm" in done.stdout


def test_unknown_model_lists_valid_ones(tmp_path):
    done = _run("--model=NoSuchModel", cwd=tmp_path)
    assert done.returncode == 2
    assert "Unknown model 'NoSuchModel'" in done.stderr
    assert "VBPR" in done.stderr and "LightGCN" in done.stderr
    assert "lightgbm" not in done.stderr


def test_unknown_dataset_lists_configured_ones(tmp_path):
    done = _run("--model=BPR", "--dataset=nowhere", "--use_gpu=False", cwd=tmp_path)
    assert done.returncode != 0
    assert "Dataset 'nowhere': missing" in done.stderr and "ml-100k-mm" in done.stderr


def test_run_with_overrides_saves_and_reloads(tiny_root, tmp_path):
    settings = tiny_config(tiny_root, state="INFO", checkpoint_dir=str(tmp_path / "saved"))
    overrides = [f"--{k}={v}" for k, v in settings.items() if k != "modalities"]
    config = tmp_path / "mods.yaml"
    config.write_text("modalities: {text: {dim: 8}}\n")
    done = _run(
        "--model=VBPR", f"--dataset={TINY}", f"--config_files={config}", *overrides, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = next((tmp_path / "log" / "VBPR").glob("*.log")).read_text()
    assert "Loading model structure and parameters from" in log  # best checkpoint reloaded
    assert "Modality text: (31, 8)" in log and "Modality image" not in log


def test_main_hands_its_arguments_to_the_config_and_leaves_sys_argv_alone(
    tiny_root, run_in_tmp, monkeypatch
):
    stray = ["run_recbole_mm.py", "--learning_rate=0.5"]
    monkeypatch.setattr(sys, "argv", list(stray))
    settings = tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp / "saved"))
    del settings["modalities"]
    result = main(
        ["--model=BPR", f"--dataset={TINY}", "--embedding_size", "16"]
        + [f"--{k}={v}" for k, v in settings.items() if k != "embedding_size"]
    )
    assert sys.argv == stray
    saved = torch.load(result["checkpoint"], weights_only=True)
    assert saved["config"]["embedding_size"] == 16
    assert saved["config_overrides"]["embedding_size"] == 16
    assert "learning_rate" not in saved["config_overrides"]


def test_default_run_builds_the_embedded_dataset_and_evaluates(tmp_path):
    import os

    cache = Path(os.environ["RECBOLE_MM_CACHE"])
    # One epoch in a few large batches keeps the default model's run short.
    done = _run(
        "--epochs=1",
        "--train_batch_size=16384",
        "--saved=False",
        "--show_progress=False",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test result" in done.stderr and "ndcg@10" in done.stderr
    assert "model = GTC" in done.stderr or "GTC(" in done.stderr
    assert (cache / "datasets" / "ml-100k-mm" / "ml-100k-mm.text.npy").is_file()
