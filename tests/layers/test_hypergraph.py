"""Hypergraph layers: user logits from the interactions (sparse == dense), the assignments'
rows are distributions (with and without Gumbel noise), and message passing on a hand case."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.model.layers.hypergraph import (
    HypergraphPropagation,
    hyperedge_assignment,
    user_hyperedge_logits,
)


def test_user_logits_sum_the_items_logits_sparse_equals_dense():
    interactions = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # 2 users, 3 items
    item_logits = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    dense = user_hyperedge_logits(interactions, item_logits)
    torch.testing.assert_close(dense, torch.tensor([[1.5, 2.5], [3.0, -1.0]]))
    sparse = user_hyperedge_logits(interactions.to_sparse(), item_logits)
    torch.testing.assert_close(sparse, dense)
    with pytest.raises(ValueError, match="number of items"):
        user_hyperedge_logits(interactions, item_logits[:2])


def test_assignment_without_noise_is_the_tempered_softmax():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    soft = hyperedge_assignment(logits, temperature=1.0, gumbel=False)
    torch.testing.assert_close(soft, torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    sharp = hyperedge_assignment(logits, temperature=0.2, gumbel=False)
    assert sharp[0, 1] > 0.99  # a small temperature pushes a row to its largest logit
    with pytest.raises(ValueError, match="temperature"):
        hyperedge_assignment(logits, temperature=0.0, gumbel=False)


def test_gumbel_assignment_rows_are_distributions_drawn_around_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    drawn = hyperedge_assignment(logits, temperature=0.2, gumbel=True, generator=generator)
    assert (drawn >= 0).all()
    torch.testing.assert_close(drawn.sum(-1), torch.ones(4000))
    assert not torch.allclose(drawn[0], drawn[1])  # noise: rows of equal logits differ
    # Gumbel-max: the arg max of h + g is hyperedge a with probability softmax(h)_a
    winners = torch.bincount(drawn.argmax(-1), minlength=3).float() / 4000
    torch.testing.assert_close(winners, torch.softmax(logits[0], -1), atol=0.03, rtol=0)


def test_gumbel_assignment_passes_gradients_to_the_logits():
    logits = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    (hyperedge_assignment(logits, temperature=0.5, gumbel=True) * weights).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_propagation_by_hand_two_items_one_user_two_hyperedges():
    items_h = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # item 0 in edge 0, item 1 split
    users_h = torch.tensor([[0.0, 1.0]])  # the user in edge 1
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    # Z = H_i^T E = [[2 + 0, 0 + 2], [0, 2]] = [[2, 2], [0, 2]]
    users, items = HypergraphPropagation(n_layers=1)(items_h, users_h, embeddings)
    torch.testing.assert_close(items, torch.tensor([[2.0, 2.0], [1.0, 2.0]]))  # H_i Z
    torch.testing.assert_close(users, torch.tensor([[0.0, 2.0]]))  # H_u Z
    # a second layer starts from the first layer's items: Z' = H_i^T [[2, 2], [1, 2]]
    users2, items2 = HypergraphPropagation(n_layers=2)(items_h, users_h, embeddings)
    z2 = torch.tensor([[2.5, 3.0], [0.5, 1.0]])
    torch.testing.assert_close(items2, items_h @ z2)
    torch.testing.assert_close(users2, users_h @ z2)


def test_propagation_refuses_bad_shapes_and_layers():
    with pytest.raises(ValueError, match="n_layers"):
        HypergraphPropagation(n_layers=0)
    with pytest.raises(ValueError, match="same number of hyperedges"):
        HypergraphPropagation(n_layers=1)(torch.ones(3, 2), torch.ones(2, 4), torch.ones(3, 5))
