"""One contract, run over every recbole_mm model on the tiny multimodal dataset."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded_model, tiny_splits
from recbole.utils import init_seed

from recbole_mm.smoke import TINY_MODEL_SETTINGS, tiny_settings
from recbole_mm.utils import recbole_mm_models


@pytest.fixture(scope="module", params=sorted(recbole_mm_models()))
def setup(request, tiny_root):
    name = request.param
    config, train, _, test = tiny_splits(tiny_root, name, **tiny_settings(name))
    return name, config, train, test


def _fresh(setup, seed=7):
    name, config, train, _ = setup
    return seeded_model(name, config, train, seed)


def _batch(train):
    return next(iter(train))


def test_every_model_has_properties_and_contract_entry():
    from recbole_mm import properties

    for name in recbole_mm_models():
        assert properties.model_file(name).is_file(), name
        assert name in TINY_MODEL_SETTINGS, f"add {name} to recbole_mm/smoke.py"


def test_loss_is_finite_and_trains(setup):
    name, _, train, _ = setup
    model = _fresh(setup)
    loss = model.calculate_loss(_batch(train))
    loss = sum(loss) if isinstance(loss, tuple) else loss
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_output_shapes(setup):
    _, _, train, test = setup
    model = _fresh(setup).eval()
    batch = _batch(train)
    with torch.no_grad():
        assert model.predict(batch).shape == (len(batch),)
        interaction = next(iter(test))[0]
        scores = model.full_sort_predict(interaction)
    n_users = len(interaction)
    assert scores.reshape(n_users, -1).shape == (n_users, model.n_items)


def test_deterministic_under_seed(setup):
    _, _, train, _ = setup
    batch = _batch(train)
    a, b = _fresh(setup, seed=3), _fresh(setup, seed=3)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    init_seed(5, True)
    la = a.calculate_loss(batch)
    init_seed(5, True)
    lb = b.calculate_loss(batch)
    assert torch.equal(torch.as_tensor(la), torch.as_tensor(lb))


def test_state_dict_round_trip(setup, tmp_path):
    _, _, _, test = setup
    model = _fresh(setup, seed=1).eval()
    path = tmp_path / "state.pt"
    torch.save(model.state_dict(), path)
    other = _fresh(setup, seed=2).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    interaction = next(iter(test))[0]
    with torch.no_grad():
        assert torch.equal(
            model.full_sort_predict(interaction), other.full_sort_predict(interaction)
        )
