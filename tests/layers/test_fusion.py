"""Collaborative-guided fusion (CEMG Eq. 2-3): shapes, the equations, gradients."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.fusion import CollaborativeGuidedFusion


def _inputs(n=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), [torch.randn(n, d, generator=g) for _ in range(2)]


def test_matches_equations_2_and_3():
    torch.manual_seed(0)
    fusion = CollaborativeGuidedFusion(dim=4)
    guide, (v, t) = _inputs()
    x, alpha = fusion(guide, [v, t])
    assert x.shape == (5, 8) and alpha.shape == (5, 2)
    wq, wk = fusion.query.weight, fusion.key.weight
    logits = torch.stack(
        [((guide @ wq.T) * (m @ wk.T)).sum(-1) for m in (v, t)], dim=1
    )  # (W_q e^c)^T (W_k e^m)
    expected_alpha = logits.softmax(1)
    torch.testing.assert_close(alpha, expected_alpha)
    expected_x = torch.cat([alpha[:, :1] * v + alpha[:, 1:] * t, guide], 1)
    torch.testing.assert_close(x, expected_x)
    torch.testing.assert_close(alpha.sum(1), torch.ones(5))


def test_deterministic_and_trainable():
    guide, mods = _inputs()
    torch.manual_seed(1)
    a = CollaborativeGuidedFusion(dim=4)
    torch.manual_seed(1)
    b = CollaborativeGuidedFusion(dim=4)
    assert torch.equal(a(guide, mods)[0], b(guide, mods)[0])
    x, _ = a(guide, mods)
    x[:, :4].pow(2).sum().backward()
    assert a.query.weight.grad.abs().sum() > 0 and a.key.weight.grad.abs().sum() > 0


def test_without_guide_and_single_modality():
    fusion = CollaborativeGuidedFusion(dim=4)
    guide, (v, t) = _inputs()
    x, alpha = fusion(None, [v, t])
    assert x.shape == (5, 4)
    torch.testing.assert_close(x, (v + t) / 2)
    x, alpha = fusion(guide, [v])
    torch.testing.assert_close(alpha, torch.ones(5, 1))
    torch.testing.assert_close(x, torch.cat([v, guide], 1))


def test_bad_input():
    fusion = CollaborativeGuidedFusion(dim=4)
    with pytest.raises(ValueError, match="at least one modality"):
        fusion(None, [])
    with pytest.raises(ValueError, match="width 3"):
        fusion(None, [torch.zeros(2, 3)])
