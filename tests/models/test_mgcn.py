"""MGCN on the tiny dataset: the purifier, the frozen kNN graphs, the users' modality views, the
contrastive term, evaluation, bad settings, an end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits

from recbole_mm.data.adjacency import user_item_block
from recbole_mm.model.layers.knn_graph import knn_item_graph

TINY_MGCN = {"knn_k": 3}


@pytest.fixture(scope="module")
def tiny(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "MGCN", **TINY_MGCN)
    return config, train, test


def test_views_have_one_row_per_user_and_item(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    n, d = model.n_users + model.n_items, model.embedding_size
    behaviour, fused = model.forward()
    assert behaviour.shape == fused.shape == (n, d)
    assert model.roles == ["text", "image"]
    for role in model.roles:
        assert model.modality_view(role).shape == (n, d)


def test_the_purifier_gates_the_item_ids_by_the_content(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    purifier, x = model.purifiers["image"], model.features["image"]
    ids = model.item_embedding.weight
    purified = purifier(ids, x)
    gate = torch.sigmoid(purifier.gate(purifier.projection(x)))  # (P1)-(P2) by hand
    torch.testing.assert_close(purified, ids * gate)
    assert ((gate > 0) & (gate < 1)).all()
    # The content decides how much of each ID dimension passes: same content, same gate ...
    doubled = purifier(2 * ids, x)
    torch.testing.assert_close(doubled, 2 * purified)
    # ... and an item whose ID embedding is zero has nothing to purify.
    silent = ids.detach().clone()
    silent[5] = 0
    assert purifier(silent, x)[5].abs().sum() == 0
    assert purifier(ids, x)[5].abs().sum() > 0
    # gradients reach both the ID embeddings and the content's projection
    purified.sum().backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert purifier.projection.weight.grad.abs().sum() > 0


def test_knn_graphs_come_from_the_features_and_stay_frozen(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    before = {role: model.item_graph(role).to_dense().clone() for role in model.roles}
    for role in model.roles:
        expected = knn_item_graph(model.features[role], k=3).to_dense()
        torch.testing.assert_close(before[role], expected)
    assert not any(name.startswith("item_graph") for name, _ in model.named_parameters())
    assert not any(key.startswith("item_graph") for key in model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    for batch in list(train)[:2]:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    for role in model.roles:
        assert not model.item_graph(role).requires_grad
        assert torch.equal(model.item_graph(role).to_dense(), before[role])


def test_modality_view_propagates_on_the_item_graph_and_lifts_to_users(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    model.n_mm_layers = 2
    role = "text"
    items = model.purifiers[role](model.item_embedding.weight, model.features[role])
    graph = model.item_graph(role).to_dense()
    items = graph @ (graph @ items)  # (I2) twice
    # (I3): the users' block of D^-1/2 A D^-1/2: 1 / sqrt(|N_u| |N_i|) per training pair
    dense = torch.zeros(model.n_users, model.n_items)
    users, item_ids = train._dataset.interaction_pairs()
    dense[users, item_ids] = 1.0
    du, di = dense.sum(1), dense.sum(0)
    norm = dense / (du.clamp(min=1)[:, None].sqrt() * di.clamp(min=1)[None, :].sqrt())
    expected = torch.cat([norm @ items, items])
    torch.testing.assert_close(model.modality_view(role), expected)
    torch.testing.assert_close(
        user_item_block(model.adjacency, n_users=model.n_users).to_dense(), norm
    )


def test_contrastive_term_is_infonce_between_fused_and_behaviour_views(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    batch = next(iter(train))
    parts = model.loss_parts(batch)
    behaviour, fused = model.forward()
    user = batch[model.USER_ID]
    pos = batch[model.ITEM_ID] + model.n_users  # item rows come after the users

    def by_hand(anchors, positives, tau=0.2):
        total = 0.0
        for i in range(len(anchors)):
            scores = [
                torch.cosine_similarity(anchors[i], positives[j], dim=0) / tau
                for j in range(len(positives))
            ]
            total += -(scores[i] - torch.logsumexp(torch.stack(scores), 0))
        return total / len(anchors)

    expected = by_hand(fused[pos], behaviour[pos]) + by_hand(fused[user], behaviour[user])
    torch.testing.assert_close(parts["cl"], expected, rtol=1e-4, atol=1e-5)
    # the weights of (L)
    model.cl_weight, model.reg_weight = 0.5, 0.25
    total = parts["bpr"] + 0.25 * parts["reg"] + 0.5 * parts["cl"]
    torch.testing.assert_close(model.calculate_loss(batch), total)


def test_cl_weight_zero_leaves_only_bpr_and_l2(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    batch = next(iter(train))
    model.cl_weight = 0.0
    parts = model.loss_parts(batch)
    assert parts["cl"] > 0
    torch.testing.assert_close(
        model.calculate_loss(batch), parts["bpr"] + model.reg_weight * parts["reg"]
    )


def test_loss_is_finite_and_reaches_every_part(tiny):
    config, train, _ = tiny
    model = seeded_model("MGCN", config, train)
    loss = model.calculate_loss(next(iter(train)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name in ("user_embedding", "item_embedding", "purifiers", "fusion"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_full_sort_predict_equals_predict_on_every_pair(tiny):
    config, train, test = tiny
    model = seeded_model("MGCN", config, train).eval()
    interaction = next(iter(test))[0]
    users = interaction[model.USER_ID]
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        assert scores.shape == (len(users), model.n_items)
        pairs = type(interaction)(
            {
                model.USER_ID: users.repeat_interleave(model.n_items),
                model.ITEM_ID: torch.arange(model.n_items).repeat(len(users)),
            }
        )
        torch.testing.assert_close(model.predict(pairs).reshape(len(users), -1), scores)
        behaviour, fused = model.forward()
    final = behaviour + fused
    expected = final[users] @ final[model.n_users :].T
    torch.testing.assert_close(scores, expected)


def test_evaluation_cache_follows_the_weights(tiny):
    config, train, test = tiny
    model = seeded_model("MGCN", config, train).eval()
    interaction = next(iter(test))[0]
    before = model.full_sort_predict(interaction).clone()
    with torch.no_grad():
        model.user_embedding.weight.add_(1.0)
    assert torch.equal(model.full_sort_predict(interaction), before)  # cached within a pass
    model.train()
    model.eval()
    assert not torch.allclose(model.full_sort_predict(interaction), before)


def test_one_modality_works(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "MGCN", **TINY_MGCN, modality_roles={"t": "text"})
    model = seeded_model("MGCN", config, train)
    assert model.roles == ["t"]
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "key, value",
    [("cl_temperature", 0.0), ("cl_weight", -1.0), ("n_mm_layers", -1), ("reg_weight", -0.1)],
)
def test_bad_settings_name_the_key(tiny_root, key, value):
    config, train, _, _ = tiny_splits(tiny_root, "MGCN", **{**TINY_MGCN, key: value})
    with pytest.raises(ValueError, match=f"{key} = {value}"):
        seeded_model("MGCN", config, train)


def test_knn_k_above_the_items_is_refused(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "MGCN", knn_k=1000)
    with pytest.raises(ValueError, match="knn_k = 1000"):
        seeded_model("MGCN", config, train)


def test_needs_content(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "MGCN", **TINY_MGCN, modality_roles={})
    with pytest.raises(ValueError, match="needs at least one content modality"):
        seeded_model("MGCN", config, train)


def test_infonce_hand_value():
    """The contrastive term's formula on a case small enough to do by hand."""
    from recbole_mm.model.layers.contrastive import info_nce_loss

    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cos(a_i, b_j) = 1 if i == j else 0
    b = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    # -log(e^{1/0.2} / (e^{1/0.2} + e^0)) = log(1 + e^-5)
    assert info_nce_loss(a, b, temperature=0.2).item() == pytest.approx(math.log1p(math.exp(-5)))


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole.trainer import Trainer

    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, **TINY_MGCN, epochs=2, eval_step=1)
    result = run_recbole_mm(model="MGCN", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))
