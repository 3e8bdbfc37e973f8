"""FREEDOM on the tiny dataset: the frozen item graph and its weights, the per-epoch pruned
graph, evaluation on the whole graph, the modality loss, bad settings, an end-to-end run."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits

from recbole_mm.model.general_recommender.freedom import modality_graph_weights
from recbole_mm.model.layers.knn_graph import knn_item_graph

TINY_FREEDOM = {"knn_k": 3}


@pytest.fixture(scope="module")
def tiny(tiny_root):
    config, train, _, test = tiny_splits(tiny_root, "FREEDOM", **TINY_FREEDOM)
    return config, train, test


def test_graph_weights_give_the_visual_role_alpha_v():
    assert modality_graph_weights(["image", "text"], visual="image", image_weight=0.1) == {
        "image": 0.1,
        "text": 0.9,
    }
    three = modality_graph_weights(["v", "a", "t"], visual="v", image_weight=0.1)
    assert three == pytest.approx({"v": 0.1, "a": 0.45, "t": 0.45})
    assert modality_graph_weights(["a", "b"], visual=None, image_weight=0.1) == {"a": 0.5, "b": 0.5}
    assert modality_graph_weights(["image"], visual="image", image_weight=0.1) == {"image": 1.0}


def test_item_graph_is_the_weighted_sum_of_the_modalities_knn_graphs(tiny):
    config, train, _ = tiny
    model = seeded_model("FREEDOM", config, train)
    assert model.graph_weights == {"text": 0.9, "image": 0.1}  # tiny-mm: text, image
    expected = sum(
        w * knn_item_graph(model.features[role], k=3).to_dense()
        for role, w in model.graph_weights.items()
    )
    torch.testing.assert_close(model.item_graph.to_dense(), expected)


def test_a_dataset_tag_names_the_visual_role(tiny_root):
    modalities = {"text": {"dim": 8}, "image": {"dim": 6, "role": "textual"}}
    config, train, _, _ = tiny_splits(
        tiny_root,
        "FREEDOM",
        **TINY_FREEDOM,
        modalities={"text": {"dim": 8, "role": "visual"}, "image": modalities["image"]},
        modality_roles={"a": "text", "b": "image"},
    )
    assert seeded_model("FREEDOM", config, train).graph_weights == {"a": 0.1, "b": 0.9}


def test_pruned_graph_is_redrawn_each_epoch_and_keeps_the_share(tiny):
    config, train, _ = tiny
    model = seeded_model("FREEDOM", config, train)
    model.train()
    first = model.pruned_adjacency()
    assert model.pruned_adjacency() is first  # one graph for the whole epoch
    n_edges = torch.unique(model.edges, dim=1).shape[1]
    assert first._nnz() == 2 * int(n_edges * (1 - model.prune_ratio))
    model.train()  # RecBole's next epoch
    second = model.pruned_adjacency()
    assert not torch.equal(first.indices(), second.indices())


def test_evaluation_uses_the_whole_graph(tiny):
    config, train, test = tiny
    model = seeded_model("FREEDOM", config, train).eval()
    interaction = next(iter(test))[0]
    users, items = model.forward(model.adjacency)
    expected = users[interaction[model.USER_ID]] @ items.T
    torch.testing.assert_close(model.full_sort_predict(interaction), expected)


def test_training_uses_the_pruned_graph(tiny):
    config, train, _ = tiny
    model = seeded_model("FREEDOM", config, train)
    batch = next(iter(train))
    torch.manual_seed(0)
    model.train()
    pruned = model.calculate_loss(batch)
    model.prune_ratio = 0.0
    model.train()
    whole = model.calculate_loss(batch)
    assert not torch.allclose(pruned, whole)


def test_modal_bpr_weight_trains_the_projections(tiny):
    config, train, _ = tiny
    batch = next(iter(train))
    model = seeded_model("FREEDOM", config, train)
    model.modal_bpr_weight = 0.0
    model.calculate_loss(batch).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.projections.parameters())
    model.zero_grad()
    model.modal_bpr_weight = 0.1
    model.calculate_loss(batch).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.projections.parameters())


@pytest.mark.parametrize(
    "key, value",
    [("edge_prune_ratio", 1.0), ("mm_image_weight", 1.5), ("n_mm_layers", -1), ("knn_k", 0)],
)
def test_bad_settings_name_the_key(tiny_root, key, value):
    config, train, _, _ = tiny_splits(tiny_root, "FREEDOM", **{**TINY_FREEDOM, key: value})
    with pytest.raises(ValueError, match=f"{key} = {value}"):
        seeded_model("FREEDOM", config, train)


def test_needs_content(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "FREEDOM", **TINY_FREEDOM, modality_roles={})
    with pytest.raises(ValueError, match="needs at least one content modality"):
        seeded_model("FREEDOM", config, train)


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole.trainer import Trainer

    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, **TINY_FREEDOM, epochs=2, eval_step=1)
    result = run_recbole_mm(model="FREEDOM", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))
