"""kNN item-item graph: the k most similar kept per row, normalisation, padding, sparse == dense."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.knn_graph import knn_item_graph, weighted_graph_sum


def _features(n=12, d=5, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, d)
    x[0] = 0  # RecBole's padding row
    return x


def _dense_reference(x, k):
    """The graph built densely: cosine, top-k per non-padding row, D^-1/2 S D^-1/2."""
    unit = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    sim = unit @ unit.T
    sim[:, 0] = float("-inf")
    binary = torch.zeros_like(sim)
    binary[1:].scatter_(1, sim[1:].topk(k, dim=1).indices, 1.0)
    degree = binary.sum(1)
    inv = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    return inv[:, None] * binary * inv[None, :]


def test_each_row_keeps_its_k_most_similar_items():
    x = _features()
    graph = knn_item_graph(x, k=3).to_dense()
    unit = x[1:] / x[1:].norm(dim=1, keepdim=True)
    sim = unit @ unit.T
    for row in range(1, 12):
        kept = set(graph[row].nonzero().flatten().tolist())
        assert len(kept) == 3
        assert kept == {int(j) + 1 for j in sim[row - 1].topk(3).indices}
        assert row in kept  # an item is its own most similar item


def test_matches_the_dense_normalised_construction():
    x = _features()
    torch.testing.assert_close(knn_item_graph(x, k=4).to_dense(), _dense_reference(x, 4))
    # every row sums k values of 1/sqrt(k)*1/sqrt(k): the graph averages the k neighbours
    torch.testing.assert_close(knn_item_graph(x, k=4).to_dense()[1:].sum(1), torch.ones(11))


def test_symmetric_normalisation_of_a_symmetric_graph():
    """With k = all items the kNN graph is the complete graph: D^-1/2 S D^-1/2 is symmetric."""
    x = _features(n=6)
    graph = knn_item_graph(x, k=5).to_dense()
    torch.testing.assert_close(graph, graph.T)
    torch.testing.assert_close(graph[1:, 1:], torch.full((5, 5), 1 / 5))


def test_padding_row_is_empty_and_nobodys_neighbour():
    graph = knn_item_graph(_features(), k=3).to_dense()
    assert graph[0].abs().sum() == 0 and graph[:, 0].abs().sum() == 0


def test_chunking_does_not_change_the_graph():
    x = _features(n=30)
    torch.testing.assert_close(
        knn_item_graph(x, k=4, chunk_size=4).to_dense(), knn_item_graph(x, k=4).to_dense()
    )


def test_sparse_product_equals_dense_product():
    x = _features()
    graph = knn_item_graph(x, k=3)
    h = torch.randn(12, 7)
    torch.testing.assert_close(torch.sparse.mm(graph, h), graph.to_dense() @ h)


def test_items_without_content_get_finite_rows():
    x = _features()
    x[5] = 0  # an item without this modality
    graph = knn_item_graph(x, k=3).to_dense()
    assert torch.isfinite(graph).all() and (graph[5] > 0).sum() == 3


@pytest.mark.parametrize("k", [0, 12])
def test_k_out_of_range_names_the_key(k):
    with pytest.raises(ValueError, match=f"knn_k = {k}"):
        knn_item_graph(_features(), k=k)


def test_weighted_sum_of_modality_graphs():
    a, b = knn_item_graph(_features(seed=1), k=3), knn_item_graph(_features(seed=2), k=3)
    total = weighted_graph_sum({"visual": a, "text": b}, {"visual": 0.1, "text": 0.9})
    torch.testing.assert_close(total.to_dense(), 0.1 * a.to_dense() + 0.9 * b.to_dense())
    with pytest.raises(ValueError, match="weights for"):
        weighted_graph_sum({"visual": a}, {"text": 1.0})


def test_weighted_graph_keeps_the_similarities_and_passes_gradients():
    x = _features().requires_grad_()
    graph = knn_item_graph(x, k=4, weighted=True)
    unit = x.detach() / x.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
    sim = unit @ unit.T
    sim[:, 0] = float("-inf")
    top = sim[1:].topk(4, dim=1)
    weights = torch.zeros(12, 12)
    weights[1:].scatter_(1, top.indices, top.values.clamp(min=0))
    inv = weights.sum(1).pow(-0.5)
    inv[0] = 0
    torch.testing.assert_close(graph.to_dense(), inv[:, None] * weights * inv[None, :])
    torch.sparse.mm(graph, torch.randn(12, 3)).sum().backward()
    assert x.grad is not None and x.grad[1:].abs().sum() > 0


def test_weighted_sum_passes_gradients_to_tensor_weights():
    a = knn_item_graph(_features(seed=1), k=3)
    b = knn_item_graph(_features(seed=2), k=3)
    alpha = torch.tensor([0.0, 0.0], requires_grad=True)
    w = alpha.softmax(0)
    total = weighted_graph_sum({"a": a, "b": b}, {"a": w[0], "b": w[1]})
    torch.testing.assert_close(total.to_dense(), 0.5 * (a.to_dense() + b.to_dense()))
    torch.sparse.mm(total, torch.randn(12, 2)).pow(2).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
