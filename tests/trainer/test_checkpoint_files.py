"""Checkpoint files: atomic writes, and clear errors for missing, truncated or foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recbole_mm.recommend import main as recommend
from recbole_mm.trainer.checkpoint import (
    CheckpointError,
    read_checkpoint,
    read_resume_file,
    save_checkpoint,
)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_save_replaces_the_file_whole(tmp_path):
    path = tmp_path / "run.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.pth"]


def test_a_failure_during_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "run-last.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def killed_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half a file on disk, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run-last.pth"]  # no temporary left


def test_truncated_resume_file_names_it_and_the_best_checkpoint(tmp_path):
    best = tmp_path / "BPR-Jan-01-2025_00-00-00.pth"
    last = tmp_path / "BPR-Jan-01-2025_00-00-00-last.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(100)}, best)
    save_checkpoint({"epoch": 2, "w": torch.ones(100)}, last)
    _truncate(last)
    with pytest.raises(CheckpointError) as err:
        read_resume_file(last)
    message = str(err.value)
    assert str(last) in message and "truncated or corrupt" in message
    assert f"resume_file={best}" in message and "start over" in message


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_checkpoint_is_named(tmp_path, legacy):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.ones(100)}, path, _use_new_zipfile_serialization=not legacy)
    _truncate(path)
    with pytest.raises(CheckpointError, match="model.pth is truncated or corrupt") as err:
        read_checkpoint(path)
    assert "trusted" not in str(err.value)


def test_missing_resume_file_lists_the_checkpoints_there(tmp_path):
    save_checkpoint({"epoch": 1}, tmp_path / "BPR-a.pth")
    with pytest.raises(CheckpointError) as err:
        read_resume_file(tmp_path / "BPR-b-last.pth")
    message = str(err.value)
    assert "resume_file=" in message and "does not exist" in message
    assert "BPR-a.pth" in message


def test_resume_from_a_run_writes_clear_errors(tiny_root, run_in_tmp):
    """Through the entry point: a truncated resume file names itself and the best checkpoint."""
    from conftest import TINY, tiny_config

    from recbole_mm.quick_start import run_recbole_mm
    from recbole_mm.trainer.checkpoint import last_checkpoint_file

    config = tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp), epochs=2)
    best = run_recbole_mm("BPR", TINY, config_dict=config)["checkpoint"]
    last = last_checkpoint_file(best)
    _truncate(Path(last))
    with pytest.raises(CheckpointError) as err:
        run_recbole_mm("BPR", TINY, config_dict={**config, "epochs": 3, "resume_file": last})
    assert last in str(err.value) and f"resume_file={best}" in str(err.value)
    # The advice works: the best checkpoint resumes.
    run_recbole_mm("BPR", TINY, config_dict={**config, "epochs": 3, "resume_file": best})


def _recommend_error(path, capsys, *extra):
    with pytest.raises(SystemExit):
        recommend([f"--checkpoint={path}", "--users=u1", *extra])
    return capsys.readouterr().err.split(" error: ", 1)[1]  # past the usage line


def test_recommend_names_what_a_file_is(tmp_path, capsys):
    yaml_file = tmp_path / "config.yaml"
    yaml_file.write_text("epochs: 3\nlearning_rate: 0.01\n")
    err = _recommend_error(yaml_file, capsys)
    assert "is not a torch checkpoint" in err and "text file" in err and "epochs: 3" in err
    assert "trusted" not in err
    err = _recommend_error(yaml_file, capsys, "--trusted")
    assert "is not a torch checkpoint" in err

    state_dict = tmp_path / "weights.pth"
    torch.save({"user_embedding.weight": torch.ones(2, 2)}, state_dict)
    err = _recommend_error(state_dict, capsys)
    assert "weights.pth holds model weights only (a state_dict" in err
    assert "'config'" in err and "KeyError" not in err

    truncated = tmp_path / "cut.pth"
    torch.save({"config": {}, "state_dict": {"w": torch.ones(100)}}, truncated)
    _truncate(truncated)
    err = _recommend_error(truncated, capsys)
    assert "cut.pth is truncated or corrupt" in err and "trusted" not in err
