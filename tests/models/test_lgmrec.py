"""LGMRec on the tiny dataset: shapes, the users' modality embeddings start from their items, the
hyperedge assignments, the contrastive term (a hand case and its gradient), evaluation without
noise, full ranking against pairwise scores, bad settings, an end-to-end run."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits

TINY_LGMREC = {"n_hyperedges": 3}


@pytest.fixture(scope="module")
def tiny(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "LGMRec", **TINY_LGMREC)
    return config, train, test


def test_forward_shapes_and_one_global_view_per_role(tiny):
    config, train, _ = tiny
    model = seeded_model("LGMRec", config, train)
    users, items, views = model.forward()
    assert users.shape == (model.n_users, 8) and items.shape == (model.n_items, 8)
    assert list(views) == ["text", "image"]  # tiny-mm's modalities, in order
    for users_g, items_g in views.values():
        assert users_g.shape == (model.n_users, 8) and items_g.shape == (model.n_items, 8)


def test_users_modality_embedding_starts_as_the_mean_of_their_items(tiny):
    config, train, _ = tiny
    model = seeded_model("LGMRec", config, train)
    model.n_modality_layers = 0  # (M2) before any propagation
    nodes = model.modality_graph_embedding("text")
    items = model.projections["text"](model.features["text"])
    users, interacted = model.interactions.indices()  # the training pairs
    for user in users.unique()[:5].tolist():
        expected = items[interacted[users == user]].mean(0)
        torch.testing.assert_close(nodes[user], expected)
    torch.testing.assert_close(nodes[model.n_users :], items)


def test_hyperedge_assignments_are_distributions_noisy_only_in_training(tiny):
    config, train, _ = tiny
    model = seeded_model("LGMRec", config, train)
    for training in (True, False):
        model.train(training)
        items_h, users_h = model.hyperedge_assignments("image")
        assert items_h.shape == (model.n_items, 3) and users_h.shape == (model.n_users, 3)
        for h in (items_h, users_h):
            assert (h >= 0).all()
            torch.testing.assert_close(h.sum(-1), torch.ones(h.shape[0]))
        again, _ = model.hyperedge_assignments("image")
        assert torch.equal(items_h, again) != training  # Gumbel noise only in training


def test_contrastive_weight_trains_the_hyperedges_without_the_global_term(tiny):
    config, train, _ = tiny
    batch = next(iter(train))
    model = seeded_model("LGMRec", config, train)
    model.global_weight = 0.0  # the hyperedges reach the loss only through L_hcl
    model.cl_weight = 0.0
    model.calculate_loss(batch).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.hyperedges.values())
    model.zero_grad()
    model.cl_weight = 0.1
    model.calculate_loss(batch).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.hyperedges.values())


def test_loss_is_finite_and_backward_reaches_every_part(tiny):
    config, train, _ = tiny
    model = seeded_model("LGMRec", config, train)
    loss = model.calculate_loss(next(iter(train)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name in ("user_embedding", "item_embedding", "projections", "hyperedges"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_full_sort_equals_predict_on_every_pair_and_evaluation_is_repeatable(tiny):
    config, train, test = tiny
    model = seeded_model("LGMRec", config, train).eval()
    interaction = next(iter(test))[0]
    user = interaction[model.USER_ID]
    with torch.no_grad():
        full = model.full_sort_predict(interaction)  # [B, n_items]
        pairs = interaction.__class__(
            {
                model.USER_ID: user.repeat_interleave(model.n_items),
                model.ITEM_ID: torch.arange(model.n_items).repeat(len(user)),
            }
        )
        model._eval_cache = None  # a fresh evaluation pass gives the same scores
        pairwise = model.predict(pairs).reshape(len(user), model.n_items)
    torch.testing.assert_close(full, pairwise)


@pytest.mark.parametrize(
    "key, value",
    [
        ("n_hyper_layers", 0),
        ("n_hyperedges", 0),
        ("hyperedge_keep_rate", 0.0),
        ("gumbel_tau", 0.0),
        ("cl_weight", -1.0),
    ],
)
def test_bad_settings_name_the_key(tiny_root, key, value):
    config, train, _, _ = tiny_splits(tiny_root, "LGMRec", **{**TINY_LGMREC, key: value})
    with pytest.raises(ValueError, match=f"{key} = {value}"):
        seeded_model("LGMRec", config, train)


def test_needs_content(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "LGMRec", **TINY_LGMREC, modality_roles={})
    with pytest.raises(ValueError, match="needs at least one content modality"):
        seeded_model("LGMRec", config, train)


def test_one_role_runs_without_a_contrastive_term(tiny_root):
    config, train, _, _ = tiny_splits(
        tiny_root, "LGMRec", **TINY_LGMREC, modality_roles={"text": "text"}
    )
    model = seeded_model("LGMRec", config, train)
    batch = next(iter(train))
    torch.manual_seed(0)
    with_cl = model.calculate_loss(batch)
    model.cl_weight = 0.0
    torch.manual_seed(0)
    torch.testing.assert_close(model.calculate_loss(batch), with_cl)


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole.trainer import Trainer

    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, **TINY_LGMREC, epochs=2, eval_step=1)
    result = run_recbole_mm(model="LGMRec", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))
