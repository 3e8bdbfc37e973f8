"""Degree-sensitive edge pruning: the share of edges kept, the renormalisation, the sampling
distribution, and seeding."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.data.adjacency import normalized_adjacency
from recbole_mm.model.layers.edge_pruning import (
    degree_sensitive_prune,
    degree_sensitive_weights,
    weighted_sample_without_replacement,
)

N_USERS, N_ITEMS = 9, 11


def _edges(seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(N_USERS, N_ITEMS, generator=g) < 0.4
    dense[0], dense[:, 0] = False, False  # padding ids have no edges
    dense[1, 1:] = True  # a heavy user
    users, items = dense.nonzero(as_tuple=True)
    return users, items


def _kept_pairs(adjacency):
    rows, cols = adjacency.indices()
    upper = rows < N_USERS
    return {(int(u), int(i) - N_USERS) for u, i in zip(rows[upper], cols[upper])}


def test_keeps_the_expected_share_of_unique_edges():
    users, items = _edges()
    n_edges = len(users)
    # repeated interactions count once
    twice_u, twice_i = torch.cat([users, users[:3]]), torch.cat([items, items[:3]])
    for ratio in (0.0, 0.5, 0.8):
        adjacency = degree_sensitive_prune(
            twice_u, twice_i, n_users=N_USERS, n_items=N_ITEMS, prune_ratio=ratio
        )
        kept = _kept_pairs(adjacency)
        assert len(kept) == int(n_edges * (1 - ratio))
        assert kept <= set(zip(users.tolist(), items.tolist()))
        assert adjacency._nnz() == 2 * len(kept)  # both directions


def test_kept_graph_is_renormalised_on_its_own_degrees():
    users, items = _edges()
    pruned = degree_sensitive_prune(users, items, n_users=N_USERS, n_items=N_ITEMS, prune_ratio=0.6)
    kept = torch.tensor(sorted(_kept_pairs(pruned))).T
    expected = normalized_adjacency(kept[0], kept[1], n_users=N_USERS, n_items=N_ITEMS)
    torch.testing.assert_close(pruned.to_dense(), expected.to_dense())
    torch.testing.assert_close(pruned.to_dense(), pruned.to_dense().T)


def test_zero_ratio_is_the_whole_graph():
    users, items = _edges()
    full = normalized_adjacency(users, items, n_users=N_USERS, n_items=N_ITEMS)
    pruned = degree_sensitive_prune(users, items, n_users=N_USERS, n_items=N_ITEMS, prune_ratio=0)
    torch.testing.assert_close(pruned.to_dense(), full.to_dense())


def test_seeded_draws_repeat_and_differ_between_seeds():
    users, items = _edges()

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return _kept_pairs(
            degree_sensitive_prune(
                users, items, n_users=N_USERS, n_items=N_ITEMS, prune_ratio=0.5, generator=g
            )
        )

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_weights_are_inverse_sqrt_degree_products():
    users = torch.tensor([1, 1, 1, 2])
    items = torch.tensor([1, 2, 3, 1])
    weights = degree_sensitive_weights(users, items, n_users=3, n_items=4)
    # user 1 has degree 3, user 2 degree 1; item 1 degree 2, items 2 and 3 degree 1
    expected = torch.tensor([6, 3, 3, 2], dtype=torch.float).rsqrt()
    torch.testing.assert_close(weights, expected)


def test_first_draw_is_proportional_to_the_weights():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = torch.Generator().manual_seed(0)
    firsts = torch.stack(
        [weighted_sample_without_replacement(weights, 1, generator=g) for _ in range(20000)]
    )
    freq = torch.bincount(firsts.flatten(), minlength=4).float() / 20000
    torch.testing.assert_close(freq, weights / weights.sum(), atol=0.015, rtol=0)


def test_edges_between_heavy_nodes_are_dropped_more_often():
    users, items = _edges()
    weights = degree_sensitive_weights(users, items, n_users=N_USERS, n_items=N_ITEMS)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(users))
    for _ in range(300):
        counts[weighted_sample_without_replacement(weights, len(users) // 2, generator=g)] += 1
    light = weights >= weights.median()
    assert counts[light].mean() > 1.2 * counts[~light].mean()
    # without replacement: never the same edge twice in one draw
    assert len(set(weighted_sample_without_replacement(weights, 10).tolist())) == 10


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_ratio_out_of_range_names_the_key(ratio):
    users, items = _edges()
    with pytest.raises(ValueError, match="edge_prune_ratio"):
        degree_sensitive_prune(users, items, n_users=N_USERS, n_items=N_ITEMS, prune_ratio=ratio)
