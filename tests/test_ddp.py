"""DDP through RecBole's settings (nproc, world_size, ip, port, offset): two CPU processes."""

from __future__ import annotations

import socket

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm.quick_start import run, run_recbole_mm


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def test_two_cpu_processes_train_with_gloo(tiny_root, run_in_tmp):
    # nproc in the settings (here the command line's) makes run_recbole_mm launch the ranks
    # through run(), which hands every rank the same settings.
    config = tiny_config(tiny_root, port=_free_port(), checkpoint_dir=str(run_in_tmp / "saved"))
    result = run_recbole_mm("VBPR", TINY, config_dict=config, overrides={"nproc": 2, "epochs": 2})
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    # Rank 0 wrote the checkpoints for both ranks; they record the distributed run and load
    # without unpickling.
    saved = torch.load(result["checkpoint"], weights_only=True)
    assert saved["config"]["world_size"] == 2 and saved["config"]["single_spec"] is False
    assert saved["config"]["epochs"] == saved["config_overrides"]["epochs"] == 2
    assert len(list((run_in_tmp / "saved").glob("VBPR-*.pth"))) == 2  # best and -last


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_gpu_process_group_with_nccl(tiny_root, run_in_tmp):
    config = tiny_config(tiny_root, use_gpu=True, checkpoint_dir=str(run_in_tmp))
    result = run("VBPR", TINY, config_dict=config, nproc=1, world_size=1, port=_free_port())
    saved = torch.load(result["checkpoint"], weights_only=True)
    assert saved["config"]["single_spec"] is False
