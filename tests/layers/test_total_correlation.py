"""Total-correlation lower bound and pairwise contrastive loss (GTC Eq. 6-9)."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.model.layers.total_correlation import (
    multilinear_inner_product,
    pairwise_contrastive_loss,
    total_correlation_loss,
)


def _views(n=5, d=3, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(m)]


def _brute_force_tc(views, seed, temperature=1.0, include_positive=False):
    """Eq. 7-9 term by term: for every anchor and row, the positive against N - 1 negatives
    (Eq. 7's denominator: the negatives, plus the positive with ``include_positive``). Negative
    ``j`` takes the first other view's row ``j`` and a permuted row of every further view."""
    g = torch.Generator().manual_seed(seed)
    n = views[0].shape[0]
    total = 0.0
    for a in range(len(views)):
        others = [v for m, v in enumerate(views) if m != a]
        perms = [list(range(n))] + [torch.randperm(n, generator=g).tolist() for _ in others[1:]]

        def h(*vectors):
            return sum(math.prod(float(v[k]) for v in vectors) for k in range(len(vectors[0])))

        anchor_loss = 0.0
        for i in range(n):
            positive = h(views[a][i], *(o[i] for o in others)) / temperature
            negatives = [
                h(views[a][i], *(o[p[j]] for o, p in zip(others, perms))) / temperature
                for j in range(n)
                if j != i
            ]
            denominator = sum(math.exp(s) for s in negatives)
            if include_positive:
                denominator += math.exp(positive)
            anchor_loss += -(positive - math.log(denominator))
        total += anchor_loss / n
    return total


@pytest.mark.parametrize("include_positive", [False, True])
@pytest.mark.parametrize(("m", "temperature"), [(2, 1.0), (3, 1.0), (3, 0.5), (4, 2.0)])
def test_tc_loss_equals_brute_force(m, temperature, include_positive):
    views = _views(m=m)
    got = total_correlation_loss(
        views,
        temperature=temperature,
        include_positive=include_positive,
        generator=torch.Generator().manual_seed(11),
    )
    assert got.dim() == 0
    expected = _brute_force_tc(views, 11, temperature, include_positive)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_multilinear_inner_product():
    x, y, z = _views(n=2, d=4)
    expected = torch.tensor([sum(x[i, k] * y[i, k] * z[i, k] for k in range(4)) for i in range(2)])
    torch.testing.assert_close(multilinear_inner_product(x, y, z), expected)


def test_tc_loss_is_lower_for_aligned_views_and_gives_gradients():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 8, generator=g)
    aligned = [base.clone().requires_grad_(), base.abs(), base.sign()]
    independent = [torch.randn(64, 8, generator=g) for _ in range(3)]
    seed = torch.Generator().manual_seed(1)
    low = total_correlation_loss(aligned, normalize=True, temperature=0.1, generator=seed)
    high = total_correlation_loss(independent, normalize=True, temperature=0.1, generator=seed)
    assert low < high
    low.backward()
    assert aligned[0].grad is not None and aligned[0].grad.abs().sum() > 0


def test_pairwise_loss_equals_brute_force():
    views = _views(n=4, d=3)
    expected = 0.0
    for a in range(3):
        for b in range(a + 1, 3):
            for x, y in ((views[a], views[b]), (views[b], views[a])):
                for i in range(4):
                    scores = [float(x[i] @ y[j]) for j in range(4)]
                    expected += 0.5 * (math.log(sum(map(math.exp, scores))) - scores[i]) / 4
    assert pairwise_contrastive_loss(views).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: total_correlation_loss(_views(m=1)), "at least 2"),
        (lambda: total_correlation_loss([torch.zeros(3, 2), torch.zeros(4, 2)]), "same shape"),
        (lambda: pairwise_contrastive_loss(_views(), temperature=0.0), "temperature = 0.0"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_two_views_never_count_the_positive_among_the_negatives():
    """With two views the negatives of row i are the other rows j != i: InfoNCE exactly."""
    x, y = _views(n=6, d=4, m=2, seed=3)
    got = total_correlation_loss([x, y], generator=torch.Generator().manual_seed(5))
    expected = 0.0
    for a, b in ((x, y), (y, x)):
        scores = a @ b.T  # [N, N], the positive on the diagonal
        off = scores.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
        expected += float((torch.logsumexp(off, dim=1) - scores.diagonal()).mean())
    assert got.item() == pytest.approx(expected, rel=1e-9)


def _copies_of_one_uniform_variable(n=64, symbols=1000, seed=0):
    """Three views that are one-hot copies of one uniform variable: TC = 2 log(symbols)."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(symbols, (n,), generator=g)
    one_hot = torch.nn.functional.one_hot(draws, symbols).double()
    return [one_hot, one_hot.clone(), one_hot.clone()], 2 * math.log(symbols)


def test_the_form_with_the_positive_is_a_lower_bound_of_tc():
    """Eq. 8: TC >= log N - loss of every anchor, for the cross-entropy form."""
    views, tc = _copies_of_one_uniform_variable()
    loss = total_correlation_loss(
        views, temperature=0.01, include_positive=True, generator=torch.Generator().manual_seed(0)
    )
    assert math.log(64) - loss.item() / 3 <= tc
    assert math.log(64) - loss.item() / 3 == pytest.approx(math.log(64), abs=1e-6)


def test_the_negatives_only_form_is_not_a_bound():
    """As Eq. 7 is printed (j != i), log N - loss overshoots the true TC of 13.8 nats."""
    views, tc = _copies_of_one_uniform_variable()
    loss = total_correlation_loss(
        views, temperature=0.01, include_positive=False, generator=torch.Generator().manual_seed(0)
    )
    assert math.log(64) - loss.item() / 3 > 5 * tc
