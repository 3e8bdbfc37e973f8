"""LATTICE on the tiny dataset: the latent graph (skip connection, modality weights), where its
gradients go, its rebuild per epoch, bad settings, an end-to-end run."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits

from recbole_mm.model.layers.knn_graph import knn_item_graph

TINY_LATTICE = {"knn_k": 3}


@pytest.fixture(scope="module")
def tiny(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "LATTICE", **TINY_LATTICE)
    return config, train, test


def test_item_graph_mixes_learned_and_initial_graphs(tiny):
    config, train, _ = tiny
    model = seeded_model("LATTICE", config, train)
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([1.0, -1.0]))
        alpha = model.modal_logits.softmax(0)
        expected = 0
        for i, (role, projection) in enumerate(model.projections.items()):
            x = model.features[role]
            learned = knn_item_graph(projection(x), k=3, weighted=True).to_dense()
            initial = knn_item_graph(x, k=3, weighted=True).to_dense()
            expected = expected + alpha[i] * (0.1 * learned + 0.9 * initial)
        torch.testing.assert_close(model.item_graph().to_dense(), expected)


def test_first_batch_of_an_epoch_trains_the_graph_learner_the_others_do_not(tiny):
    config, train, _ = tiny
    batches = iter(train)
    model = seeded_model("LATTICE", config, train)
    model.train()
    model.calculate_loss(next(batches)).backward()
    assert model.modal_logits.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in model.projections.parameters())
    model.zero_grad()
    model.calculate_loss(next(batches)).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.projections.parameters())
    model.zero_grad()
    model.train()  # the next epoch rebuilds the graph
    model.calculate_loss(next(iter(train))).backward()
    assert model.modal_logits.grad.abs().sum() > 0


def test_lambda_one_is_the_initial_graph(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "LATTICE", **TINY_LATTICE, lambda_coeff=1.0)
    model = seeded_model("LATTICE", config, train)
    before = model.item_graph().to_dense()
    with torch.no_grad():
        for p in model.projections.parameters():
            p.add_(1.0)
    torch.testing.assert_close(model.item_graph().to_dense(), before)


def test_evaluation_representations_follow_the_weights(tiny):
    config, train, test = tiny
    model = seeded_model("LATTICE", config, train).eval()
    interaction = next(iter(test))[0]
    first = model.full_sort_predict(interaction)
    other = seeded_model("LATTICE", config, train, seed=5).eval()
    model.load_state_dict(other.state_dict())
    assert not torch.equal(first, model.full_sort_predict(interaction))


@pytest.mark.parametrize("key, value", [("lambda_coeff", 1.5), ("reg_weight", -1.0)])
def test_bad_settings_name_the_key(tiny_root, key, value):
    config, train, _, _ = tiny_splits(tiny_root, "LATTICE", **{**TINY_LATTICE, key: value})
    with pytest.raises(ValueError, match=f"{key} = {value}"):
        seeded_model("LATTICE", config, train)


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole.trainer import Trainer

    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, **TINY_LATTICE, epochs=2, eval_step=1)
    result = run_recbole_mm(model="LATTICE", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))
