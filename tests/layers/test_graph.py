"""Graph building blocks: normalisation invariants, sparse == dense, agreement with RecBole."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm.data.adjacency import mean_adjacency, normalized_adjacency
from recbole_mm.model.layers.graph import LightGCNPropagation, MeanGraphConv


def _toy():
    users = torch.tensor([1, 1, 2, 3, 3, 3, 1])  # (1, 2) repeated
    items = torch.tensor([1, 2, 2, 1, 2, 3, 2])
    return users, items


def test_adjacency_is_symmetric_normalised_and_deduplicated():
    users, items = _toy()
    adj = normalized_adjacency(users, items, n_users=4, n_items=4).to_dense()
    assert adj.shape == (8, 8)
    torch.testing.assert_close(adj, adj.T)
    degree = torch.tensor([0, 2, 1, 3, 0, 2, 3, 1], dtype=torch.float)  # users 0-3, items 0-3
    expected = torch.zeros(8, 8)
    for u, i in {(1, 1), (1, 2), (2, 2), (3, 1), (3, 2), (3, 3)}:
        value = 1 / (degree[u] * degree[4 + i]).sqrt()
        expected[u, 4 + i] = expected[4 + i, u] = value
    torch.testing.assert_close(adj, expected)
    assert not adj[0].any() and not adj[4].any()  # padding / isolated nodes


def test_sparse_and_dense_propagation_agree():
    users, items = _toy()
    adj = normalized_adjacency(users, items, n_users=4, n_items=4)
    emb = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    prop = LightGCNPropagation(n_layers=3)
    torch.testing.assert_close(prop(adj, emb), prop(adj.to_dense(), emb))
    torch.testing.assert_close(LightGCNPropagation(n_layers=0)(adj, emb), emb)
    with pytest.raises(ValueError, match="n_layers = -1"):
        LightGCNPropagation(n_layers=-1)


def test_mean_adjacency_averages_neighbours():
    adj = mean_adjacency(
        torch.tensor([1, 1, 2, 1]), torch.tensor([1, 2, 2, 2]), n_users=3, n_items=3
    ).to_dense()
    # user 1 -> items 1, 2 (repeat counted once); item 2 <- users 1, 2
    assert adj[1, 3 + 1] == adj[1, 3 + 2] == 0.5
    assert adj[3 + 2, 1] == adj[3 + 2, 2] == 0.5
    torch.testing.assert_close(adj.sum(1)[[1, 2, 4, 5]], torch.ones(4))
    assert not adj[0].any()


def test_mean_graph_conv_sparse_and_dense_agree():
    users, items = _toy()
    adj = mean_adjacency(users, items, n_users=4, n_items=4)
    torch.manual_seed(0)
    conv = MeanGraphConv(dims=[5, 3, 2], negative_slope=0.1)
    x = torch.randn(8, 5)
    out = conv(adj, x)
    assert out.shape == (8, 2)
    torch.testing.assert_close(out, conv(adj.to_dense(), x))
    # One layer by hand: LeakyReLU(x W_1 + mean of the neighbours W_2).
    one = MeanGraphConv(dims=[5, 3], negative_slope=0.1)
    w1, w2 = one.self_weights[0].weight, one.neighbour_weights[0].weight
    expected = torch.nn.functional.leaky_relu(x @ w1.T + adj.to_dense() @ x @ w2.T, 0.1)
    torch.testing.assert_close(one(adj, x), expected)
    with pytest.raises(ValueError, match="at least one layer"):
        MeanGraphConv(dims=[5])


def test_matches_recbole_lightgcn(tiny_root):
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation, get_model

    config = Config(model="LightGCN", dataset=TINY, config_dict=tiny_config(tiny_root, n_layers=2))
    train, _, _ = data_preparation(config, create_dataset(config))
    recbole = get_model("LightGCN")(config, train._dataset)
    dataset = train._dataset
    adj = normalized_adjacency(
        dataset.inter_feat["user_id"],
        dataset.inter_feat["item_id"],
        n_users=dataset.user_num,
        n_items=dataset.item_num,
    )
    # RecBole adds 1e-7 to every degree; the difference stays far below float32 noise here.
    torch.testing.assert_close(
        adj.to_dense(), recbole.norm_adj_matrix.to_dense(), rtol=1e-5, atol=1e-6
    )
    ego = recbole.get_ego_embeddings()
    ours = LightGCNPropagation(n_layers=2)(adj, ego)
    users, items = recbole.forward()
    torch.testing.assert_close(ours, torch.cat([users, items]), rtol=1e-5, atol=1e-6)
