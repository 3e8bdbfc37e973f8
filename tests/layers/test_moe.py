"""ID-guided mixture of experts: the formula of Eq. 3-6, gating by the guide, errors."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.moe import GuidedMixtureOfExperts


def _moe(n_experts=3):
    torch.manual_seed(0)
    return GuidedMixtureOfExperts(dim=4, guide_dim=5, n_experts=n_experts)


def test_output_is_the_gate_weighted_sum_of_the_experts():
    moe = _moe()
    x, guide = torch.randn(7, 4), torch.randn(7, 5)
    gate = torch.softmax(guide @ moe.gate_proj.weight.T + moe.gate_proj.bias, dim=-1)
    expected = sum(
        gate[:, n : n + 1] * (x @ moe.expert_weight[n].T + moe.expert_bias[n]) for n in range(3)
    )
    torch.testing.assert_close(moe(x, guide), expected)
    torch.testing.assert_close(moe.gate(guide).sum(-1), torch.ones(7))


def test_gate_reads_the_guide_not_the_input():
    moe = _moe()
    x, guide = torch.randn(2, 4), torch.randn(2, 5)
    # Same content, different guides -> different mixtures (Eq. 3-4 gate on the ID embedding).
    same_x = x[:1].expand(2, 4)
    out = moe(same_x, guide)
    assert not torch.allclose(out[0], out[1])
    # One expert: the gate is 1 and the output is that expert, whatever the guide.
    single = _moe(n_experts=1)
    torch.testing.assert_close(
        single(x, guide), x @ single.expert_weight[0].T + single.expert_bias[0]
    )


def test_leading_shapes_and_gradients():
    moe = _moe()
    x, guide = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 5, requires_grad=True)
    out = moe(x, guide)
    assert out.shape == (2, 3, 4)
    out.square().sum().backward()
    assert guide.grad.abs().sum() > 0 and moe.gate_proj.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_experts = 0"):
        GuidedMixtureOfExperts(dim=4, guide_dim=4, n_experts=0)
    with pytest.raises(ValueError, match="same leading shape"):
        _moe()(torch.randn(2, 4), torch.randn(3, 5))
