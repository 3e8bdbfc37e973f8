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


# -- MGCN's behaviour-aware fuser ------------------------------------------------------------


def _views(n=6, d=4, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), [torch.randn(n, d, generator=g) for _ in range(m)]


def test_behaviour_aware_fusion_matches_its_steps():
    from recbole_mm.model.layers.fusion import BehaviourAwareFusion

    torch.manual_seed(0)
    fusion = BehaviourAwareFusion(dim=4, n_modalities=2)
    behaviour, (v, t) = _views()
    fused, alpha = fusion(behaviour, [v, t])
    assert fused.shape == (6, 4) and alpha.shape == (6, 2)
    w, q = fusion.attention[0], fusion.attention[2]
    logits = torch.stack([q(torch.tanh(w(m))).squeeze(-1) for m in (v, t)], 1)  # (F1)
    torch.testing.assert_close(alpha, logits.softmax(1))
    shared = alpha[:, :1] * v + alpha[:, 1:] * t  # (F2)
    p_v, p_t = (torch.sigmoid(g[0](behaviour)) for g in fusion.preferences)  # (F3)
    expected = (shared + p_v * (v - shared) + p_t * (t - shared)) / 3  # (F4), the code's / 3
    torch.testing.assert_close(fused, expected)


def test_behaviour_aware_fusion_weighs_modalities_per_node():
    """The softmax runs over each node's modalities (the authors' repository takes it over the
    nodes): every row sums to one, and one node's output ignores the other nodes."""
    from recbole_mm.model.layers.fusion import BehaviourAwareFusion

    torch.manual_seed(0)
    fusion = BehaviourAwareFusion(dim=4, n_modalities=3)
    behaviour, views = _views(m=3)
    fused, alpha = fusion(behaviour, views)
    torch.testing.assert_close(alpha.sum(1), torch.ones(6))
    changed = [v.clone() for v in views]
    changed[0][1:] += 5.0  # every node but node 0
    fused_changed, alpha_changed = fusion(behaviour, changed)
    torch.testing.assert_close(alpha_changed[0], alpha[0])
    torch.testing.assert_close(fused_changed[0], fused[0])


def test_behaviour_aware_fusion_gates_come_from_the_behaviour():
    from recbole_mm.model.layers.fusion import BehaviourAwareFusion

    torch.manual_seed(0)
    fusion = BehaviourAwareFusion(dim=4, n_modalities=2)
    behaviour, views = _views()
    for gate in fusion.preferences:  # sigmoid(-inf) = 0: no modality-specific part passes
        torch.nn.init.zeros_(gate[0].weight)
        torch.nn.init.constant_(gate[0].bias, -1e4)
    fused, alpha = fusion(behaviour, views)
    shared = alpha[:, :1] * views[0] + alpha[:, 1:] * views[1]
    torch.testing.assert_close(fused, shared / 3)
    # one modality: the shared part is the view itself and the specific part is zero
    single = BehaviourAwareFusion(dim=4, n_modalities=1)
    fused_one, alpha_one = single(behaviour, views[:1])
    torch.testing.assert_close(alpha_one, torch.ones(6, 1))
    torch.testing.assert_close(fused_one, views[0] / 2)
    with pytest.raises(ValueError, match="2 views for 1 modalities"):
        single(behaviour, views)
