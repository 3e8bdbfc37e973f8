"""VBPR: Eq. 1 against a hand computation, the regularisers' gradients, feature standardisation."""

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


def _raw_features(model, train):
    """f_i as the dataset loads it: every modality, side by side, in the model's role order."""
    dataset = train._dataset
    return torch.cat([dataset.modality_features(m).float() for m in model.features.roles], dim=1)


@pytest.mark.parametrize("norm", ["none", "standardize"])
def test_scores_are_eq_1_with_the_projected_features(tiny_root, norm):
    """x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i) + beta'.f_i, computed by hand from the
    dataset's features (raw by default, the paper's CNN features; standardised on request)."""
    config, train, _, _ = tiny_splits(tiny_root, "VBPR", vbpr_feature_norm=norm)
    model = seeded_model("VBPR", config, train)
    torch.nn.init.normal_(model.item_bias.weight)  # Xavier left the biases at small values
    raw = _raw_features(model, train)
    if norm == "none":
        f = raw
    else:
        widths = [model.features[r].shape[1] for r in model.features.roles]
        f = torch.cat([standardize_block(b) for b in raw.split(widths, dim=1)], dim=1)
    user = torch.tensor([1, 2, 3])
    item = torch.tensor([4, 5, 6])
    expected = (
        model.item_bias.weight[item, 0]
        + (model.user_gamma.weight[user] * model.item_gamma.weight[item]).sum(1)
        + (model.user_theta.weight[user] * (f[item] @ model.projection.weight.T)).sum(1)
        + f[item] @ model.feature_bias.weight[0]
    )
    with torch.no_grad():
        torch.testing.assert_close(model.forward(user, item), expected)
        full = model.full_sort_predict({model.USER_ID: user})
    torch.testing.assert_close(full[torch.arange(3), item], expected)
    # the projection is used: zeroing E changes exactly the theta_u.(E f_i) term
    with torch.no_grad():
        theta_term = (model.user_theta.weight[user] * (f[item] @ model.projection.weight.T)).sum(1)
        model.projection.weight.zero_()
        torch.testing.assert_close(model.forward(user, item), expected - theta_term)
    assert theta_term.abs().min() > 0


def _grads(model, batch, reg_weight):
    model.zero_grad(set_to_none=True)
    model.reg_weight = reg_weight
    model.calculate_loss(batch).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_paper_regulariser_is_squared_l2_of_factors_and_biases_only(vbpr):
    """The default's L2 term, reg_weight x ||gamma_u, theta_u, gamma_i, beta_i||^2 / B: its
    gradient on each row is 2 reg_weight x the row (times how often the batch holds it) / B,
    and E and beta' get none."""
    config, train = vbpr
    model = seeded_model("VBPR", config, train)
    assert model.regularizer == "paper"
    batch = next(iter(train))
    plain, reg = _grads(model, batch, 0.0), _grads(model, batch, 0.5)
    user, n = batch[model.USER_ID], len(batch)
    items = torch.cat([batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]])
    user_count = torch.bincount(user, minlength=model.n_users).float()[:, None]
    item_count = torch.bincount(items, minlength=model.n_items).float()[:, None]
    for name, table, count in [
        ("user_gamma.weight", model.user_gamma, user_count),
        ("user_theta.weight", model.user_theta, user_count),
        ("item_gamma.weight", model.item_gamma, item_count),
        ("item_bias.weight", model.item_bias, item_count),
    ]:
        expected = 2 * 0.5 * count * table.weight.detach() / n
        torch.testing.assert_close(reg[name] - plain[name], expected, atol=1e-6, rtol=1e-4)
    for name in ("projection.weight", "feature_bias.weight"):
        torch.testing.assert_close(reg[name], plain[name], atol=0, rtol=0)


def test_mmrec_regulariser_reaches_the_projected_content(tiny_root):
    """vbpr_regularizer: mmrec (MMRec's convention) also regularises E f_i and beta'.f_i."""
    config, train, _, _ = tiny_splits(tiny_root, "VBPR", vbpr_regularizer="mmrec")
    model = seeded_model("VBPR", config, train)
    batch = next(iter(train))
    plain, reg = _grads(model, batch, 0.0), _grads(model, batch, 0.5)
    for name in ("projection.weight", "feature_bias.weight", "user_theta.weight"):
        assert (reg[name] - plain[name]).abs().max() > 1e-6, name


@pytest.mark.parametrize(
    ("key", "value"), [("vbpr_feature_norm", "l3"), ("vbpr_regularizer", "l1")]
)
def test_unknown_settings_name_the_key(tiny_root, key, value):
    with pytest.raises(ValueError, match=f"{key} = '{value}'"):
        config, train, _, _ = tiny_splits(tiny_root, "VBPR", **{key: value})
        seeded_model("VBPR", config, train)
