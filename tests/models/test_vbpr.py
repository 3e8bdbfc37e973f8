"""VBPR: feature standardisation and what the regulariser reaches."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded_model, tiny_splits

from recbole_mm.model.general_recommender.vbpr import standardize_block


def test_standardize_block_centres_columns_and_balances_modalities():
    torch.manual_seed(0)
    raw = torch.cat([torch.zeros(1, 5), 30 + 4 * torch.randn(200, 5)])  # row 0: padding
    raw[:, 4] = 7.0  # a constant column carries nothing
    out = standardize_block(raw)
    torch.testing.assert_close(out[1:].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    assert out[0].abs().sum() == 0 and out[:, 4].abs().sum() == 0
    # four informative columns of unit variance, each scaled by 1/sqrt(5)
    assert out[1:].pow(2).sum(1).mean().item() == pytest.approx(4 / 5, rel=1e-4)


@pytest.fixture(scope="module")
def vbpr(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "VBPR")
    return config, train


def test_features_are_standardised_by_default(vbpr):
    config, train = vbpr
    model = seeded_model("VBPR", config, train)
    assert model.features.concatenated()[1:].mean(0).abs().max() < 1e-5


def test_regulariser_reaches_projection_and_feature_bias(vbpr):
    config, train = vbpr
    model = seeded_model("VBPR", config, train)
    batch = next(iter(train))
    model.reg_weight = 0.0
    plain = model.calculate_loss(batch)
    plain.backward()
    grad_plain = model.feature_bias.weight.grad.clone()
    model.zero_grad()
    model.reg_weight = 10.0
    model.calculate_loss(batch).backward()
    assert not torch.allclose(model.feature_bias.weight.grad, grad_plain)
    assert model.item_bias.weight.grad.abs().sum() > 0


def test_unknown_feature_norm_names_the_key(tiny_root):
    with pytest.raises(ValueError, match="vbpr_feature_norm = 'l3'"):
        config, train, _, _ = tiny_splits(tiny_root, "VBPR", vbpr_feature_norm="l3")
        seeded_model("VBPR", config, train)
