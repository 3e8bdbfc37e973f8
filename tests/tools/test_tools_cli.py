"""The command lines, run as a user runs them: ``python -m dataset_tools.<tool> ...``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tools_fixtures import REPO, write_amazon_raw, write_mmrec_folder


@pytest.fixture(scope="module")
def raw_2014(tmp_path_factory):
    return write_amazon_raw(tmp_path_factory.mktemp("raw2014"), release="2014", category="Baby")


def run(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("tool", ["dataset_tools.amazon", "dataset_tools.mmrec"])
def test_help(tool):
    result = run(tool, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m {tool}" in result.stdout
    assert "--out" in result.stdout and "--name" in result.stdout


@pytest.mark.slow
def test_amazon_2014_from_a_raw_folder(raw_2014, tmp_path):
    result = run(
        "dataset_tools.amazon",
        "--release", "2014",
        "--category", "Baby",
        "--raw-dir", str(raw_2014["reviews"].parent),
        "--out", str(tmp_path),
        "--name", "amazon-baby",
        "--split", "mmrec",
        "--seed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "amazon-baby"
    for suffix in ("train.inter", "valid.inter", "test.inter", "text.npy", "image.npy", "item"):
        assert (folder / f"amazon-baby.{suffix}").is_file(), suffix
    assert "1 items without an image (no row" in result.stderr
    assert "after 3 passes" in result.stderr


def test_amazon_missing_input_names_the_file(tmp_path):
    result = run(
        "dataset_tools.amazon",
        "--release", "2014",
        "--category", "Baby",
        "--raw-dir", str(tmp_path),
        "--out", str(tmp_path),
        "--name", "x",
        "--split", "loo",
        "--quiet",
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{tmp_path / 'reviews_Baby_5.json.gz'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_amazon_argument_errors():
    result = run("dataset_tools.amazon", "--release", "2014", "--out", "o", "--name", "x",
                 "--split", "loo")  # fmt: skip
    assert result.returncode == 2
    assert "give --raw-dir and --category, or both --reviews and --meta" in result.stderr
    result = run("dataset_tools.amazon", "--release", "2014", "--reviews", "r", "--meta", "m",
                 "--out", "o", "--name", "x", "--split", "random")  # fmt: skip
    assert result.returncode == 2 and "invalid choice: 'random'" in result.stderr


def test_mmrec_cli_round_trip_and_bad_label(tmp_path):
    write_mmrec_folder(tmp_path / "baby")
    result = run(
        "dataset_tools.mmrec",
        "--mmrec-dir", str(tmp_path / "baby"),
        "--out", str(tmp_path / "out"),
        "--name", "amazon-baby",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "train 27, valid 9, test 9" in result.stderr
    write_mmrec_folder(tmp_path / "bad", labels_override={0: "7"})
    result = run(
        "dataset_tools.mmrec",
        "--mmrec-dir", str(tmp_path / "bad"),
        "--out", str(tmp_path / "out"),
        "--name", "b",
        "--features",
    )  # fmt: skip
    assert result.returncode == 2
    assert "x_label must be 0 (train), 1 (valid) or 2 (test)" in result.stderr
