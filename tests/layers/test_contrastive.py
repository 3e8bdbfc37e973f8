"""One-directional in-batch InfoNCE: hand values, the temperature, the direction, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.model.layers.contrastive import info_nce_loss


def test_orthogonal_pairs_by_hand():
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosine 1 with its own positive, 0 with the other
    b = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    for tau in (1.0, 0.2):
        expected = math.log1p(math.exp(-1 / tau))  # -log(e^{1/tau} / (e^{1/tau} + e^0))
        assert info_nce_loss(a, b, temperature=tau).item() == pytest.approx(expected)


def test_three_rows_by_hand_and_its_direction():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # cos(a_i, b_j) depends on i only: 1, 1/sqrt(2), 0; every row's candidates score alike
    assert info_nce_loss(a, b, temperature=0.5).item() == pytest.approx(math.log(3))
    # the other direction: anchor b_i against a_j, scores (1, 1/sqrt 2, 0) / 0.5 for every row
    s = [2.0, 2.0 / math.sqrt(2.0), 0.0]
    lse = math.log(sum(math.exp(x) for x in s))
    expected = sum(lse - s[i] for i in range(3)) / 3
    assert info_nce_loss(b, a, temperature=0.5).item() == pytest.approx(expected)


def test_gradients_and_bad_input():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    info_nce_loss(a, b, temperature=0.2).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature = 0"):
        info_nce_loss(a, b, temperature=0)
    with pytest.raises(ValueError, match="same"):
        info_nce_loss(a, b[:3], temperature=0.2)


def test_candidates_form_by_hand():
    """LGMRec's L_hcl: every row of the other view as a candidate, summed over the batch."""
    anchor = torch.tensor([[2.0, 0.0]])  # cosine scores: normalised first
    positive = torch.tensor([[3.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    loss = info_nce_loss(anchor, positive, candidates=candidates, temperature=1.0, reduction="sum")
    torch.testing.assert_close(loss, torch.tensor(math.log(math.e + 1.0) - 1.0))
    # summed over the batch, not averaged
    twice = info_nce_loss(
        anchor.repeat(2, 1),
        positive.repeat(2, 1),
        candidates=candidates,
        temperature=1.0,
        reduction="sum",
    )
    torch.testing.assert_close(twice, 2 * loss)
    sharp = info_nce_loss(anchor, positive, candidates=candidates, temperature=0.2, reduction="sum")
    torch.testing.assert_close(sharp, torch.tensor(math.log(1.0 + math.exp(-5.0))))
