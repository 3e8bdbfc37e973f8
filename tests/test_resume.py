"""An interrupted run resumed from its last checkpoint ends exactly as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm.quick_start import build, prepare, run_recbole_mm
from recbole_mm.trainer.checkpoint import last_checkpoint_file

EPOCHS, INTERRUPT_AT = 4, 2


def _config(root, folder, **overrides):
    # stopping_step above EPOCHS: every epoch runs; eval_step 1: the best epoch can move.
    settings = dict(epochs=EPOCHS, eval_step=1, stopping_step=10, learning_rate=0.05)
    return tiny_config(root, checkpoint_dir=str(folder), **{**settings, **overrides})


def _train(model, config_dict):
    config, _, train_data, valid_data, test_data = prepare(model, TINY, None, config_dict)
    net, trainer = build(config, train_data)
    best = trainer.fit(train_data, valid_data, saved=True)
    return trainer, best, trainer.evaluate(test_data, load_best_model=True), net


def _interrupted(model, config_dict):
    """Train until the second batch of epoch INTERRUPT_AT, then stop as a killed job would."""
    config, _, train_data, valid_data, _ = prepare(model, TINY, None, config_dict)
    net, trainer = build(config, train_data)
    calls, loss = {"n": 0}, net.calculate_loss

    def interrupted(interaction):
        calls["n"] += 1
        if calls["n"] > INTERRUPT_AT * len(train_data) + 1:
            raise KeyboardInterrupt
        return loss(interaction)

    net.calculate_loss = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train_data, valid_data, saved=True)
    return last_checkpoint_file(trainer.saved_model_file)


@pytest.mark.parametrize("model", ["VBPR", "BPR"])
def test_interrupted_run_resumes_to_the_same_result(model, tiny_root, run_in_tmp):
    full, full_best, full_test, full_net = _train(model, _config(tiny_root, run_in_tmp / "a"))
    last = _interrupted(model, _config(tiny_root, run_in_tmp / "b"))
    assert torch.load(last, weights_only=True)["epoch"] == INTERRUPT_AT - 1

    resumed, resumed_best, resumed_test, resumed_net = _train(
        model, _config(tiny_root, run_in_tmp / "b", resume_file=last)
    )
    assert resumed.start_epoch == INTERRUPT_AT
    assert resumed_best == full_best
    assert resumed_test == full_test
    for key, value in full_net.state_dict().items():
        assert torch.equal(value, resumed_net.state_dict()[key]), key


def test_resume_without_random_states_diverges(tiny_root, run_in_tmp):
    """RecBole's own resume re-seeds the loader: shuffling and negatives repeat epoch 0's."""
    *_, full_net = _train("BPR", _config(tiny_root, run_in_tmp / "a"))
    last = _interrupted("BPR", _config(tiny_root, run_in_tmp / "b"))
    config, _, train_data, valid_data, _ = prepare(
        "BPR", TINY, None, _config(tiny_root, run_in_tmp / "b")
    )
    net, trainer = build(config, train_data)
    trainer.resume_checkpoint(last)
    trainer._pending_random_states = None  # what RecBole's resume_checkpoint restores
    trainer.fit(train_data, valid_data, saved=True)
    weights = full_net.state_dict()["user_embedding.weight"]
    assert not torch.equal(weights, net.state_dict()["user_embedding.weight"])


def test_resume_through_the_entry_point(tiny_root, run_in_tmp):
    first = run_recbole_mm("BPR", TINY, config_dict=_config(tiny_root, run_in_tmp, epochs=2))
    last = last_checkpoint_file(first["checkpoint"])
    more = run_recbole_mm(
        "BPR", TINY, config_dict=_config(tiny_root, run_in_tmp, epochs=3, resume_file=last)
    )
    assert more["checkpoint"] == first["checkpoint"]
    best = torch.load(more["checkpoint"], weights_only=True)
    assert best["config"]["model"] == "BPR" and "state_dict" in best
    assert torch.load(last, weights_only=True)["epoch"] == 2
