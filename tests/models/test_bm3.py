"""BM3 on the tiny dataset: no negative sampling, the criterion, stop-gradient targets, the
weights of the three objectives, the score, bad settings, an end-to-end run."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits

from recbole_mm.model.general_recommender.bm3 import negative_cosine


@pytest.fixture(scope="module")
def tiny(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "BM3")
    return config, train, test


def test_trains_without_negative_samples(tiny):
    config, train, _ = tiny
    assert config["train_neg_sample_args"]["distribution"] == "none"
    batch = next(iter(train))
    model = seeded_model("BM3", config, train)
    assert model.NEG_ITEM_ID not in batch.interaction
    assert torch.isfinite(model.calculate_loss(batch))


def test_negative_cosine_is_zero_for_aligned_rows_and_stops_the_target_gradient():
    online = torch.randn(4, 3, requires_grad=True)
    target = (2 * online.detach()).requires_grad_()
    loss = negative_cosine(online, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(online, -target).item() == pytest.approx(2.0)
    negative_cosine(online, torch.randn(4, 3)).backward()
    assert target.grad is None and online.grad.abs().sum() > 0


def test_target_view_is_dropout_without_gradient(tiny):
    config, train, _ = tiny
    model = seeded_model("BM3", config, train)
    x = torch.ones(200, 8, requires_grad=True)
    target = model._target(x)
    assert not target.requires_grad
    zeros = (target == 0).float().mean().item()
    assert zeros == pytest.approx(model.dropout_prob, abs=0.05)
    torch.testing.assert_close(target[target != 0], torch.full_like(target[target != 0], 2.0))


def test_cl_weight_alone_trains_the_modality_projections(tiny):
    config, train, _ = tiny
    batch = next(iter(train))
    model = seeded_model("BM3", config, train)
    model.cl_weight = 0.0
    model.calculate_loss(batch).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.projections.parameters())
    assert model.predictor.weight.grad.abs().sum() > 0
    model.zero_grad()
    model.cl_weight = 2.0
    model.calculate_loss(batch).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.projections.parameters())


def test_regulariser_covers_all_online_representations(tiny):
    config, train, _ = tiny
    batch = next(iter(train))
    model = seeded_model("BM3", config, train)
    model.reg_weight, model.cl_weight = 0.0, 0.0
    plain = model.calculate_loss(batch)
    model.reg_weight = 1.0
    users, items = model.forward()
    expected = (users.norm() + items.norm()) / model.n_items
    torch.manual_seed(0)
    with_reg = model.calculate_loss(batch)
    torch.manual_seed(0)
    model.reg_weight = 0.0
    without = model.calculate_loss(batch)
    assert (with_reg - without).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(plain)


def test_score_is_the_predictor_outputs_dot_product(tiny):
    config, train, test = tiny
    model = seeded_model("BM3", config, train).eval()
    interaction = next(iter(test))[0]
    users, items = model.forward()
    u, i = model.predictor(users), model.predictor(items)
    expected = u[interaction[model.USER_ID]] @ i.T
    torch.testing.assert_close(model.full_sort_predict(interaction), expected)


def test_runs_without_content(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "BM3", modality_roles={})
    model = seeded_model("BM3", config, train)
    assert len(model.projections) == 0
    assert torch.isfinite(model.calculate_loss(next(iter(train))))


@pytest.mark.parametrize("key, value", [("dropout_prob", 1.0), ("cl_weight", -1.0)])
def test_bad_settings_name_the_key(tiny_root, key, value):
    config, train, _, _ = tiny_splits(tiny_root, "BM3", **{key: value})
    with pytest.raises(ValueError, match=f"{key} = {value}"):
        seeded_model("BM3", config, train)


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole.trainer import Trainer

    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, epochs=2, eval_step=1)
    result = run_recbole_mm(model="BM3", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))
