"""PCA: shapes, determinism, sign convention, agreement with an eigen-decomposition."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.pca import PCA


def _data(n=50, f=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1])[:f]
    return torch.randn(n, f, generator=g) * scales + 3.0


def test_shapes_and_orthonormal_components():
    x = _data()
    pca = PCA(n_components=3)
    out = pca.fit_transform(x)
    assert out.shape == (50, 3)
    assert pca.transform(x[:4].unsqueeze(0)).shape == (1, 4, 3)
    gram = pca.components @ pca.components.T
    torch.testing.assert_close(gram, torch.eye(3), atol=1e-5, rtol=0)
    # Centred output, variances in decreasing order.
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    var = out.var(0)
    assert (var[:-1] >= var[1:]).all()


def test_matches_covariance_eigenvectors_and_sign_rule():
    x = _data().double()
    pca = PCA(n_components=4).fit(x)
    cov = torch.cov(x.T)
    values, vectors = torch.linalg.eigh(cov)
    top = vectors[:, values.argsort(descending=True)[:4]].T  # [4, F]
    for ours, ref in zip(pca.components, top):
        assert torch.allclose(ours, ref, atol=1e-8) or torch.allclose(ours, -ref, atol=1e-8)
        assert ours[ours.abs().argmax()] > 0  # the fixed sign
    torch.testing.assert_close(pca.scale**2, values.sort(descending=True).values[:4])


def test_deterministic_and_row_order_invariant():
    x = _data()
    a = PCA(n_components=3).fit(x)
    b = PCA(n_components=3).fit(x.clone())
    assert torch.equal(a.components, b.components) and torch.equal(a.mean, b.mean)
    shuffled = PCA(n_components=3).fit(x[torch.randperm(50, generator=torch.Generator())])
    torch.testing.assert_close(shuffled.components, a.components, atol=1e-5, rtol=0)


def test_full_rank_round_trip_and_whiten():
    x = _data(f=5)
    pca = PCA(n_components=5).fit(x)
    back = pca.transform(x) @ pca.components + pca.mean
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
    white = PCA(n_components=2, whiten=True).fit_transform(x)
    torch.testing.assert_close(white.var(0), torch.ones(2), atol=1e-4, rtol=0)


def test_state_dict_round_trip():
    x = _data()
    pca = PCA(n_components=2).fit(x)
    other = PCA(n_components=2)
    other.load_state_dict(pca.state_dict())
    assert torch.equal(other.transform(x), pca.transform(x))


def test_bad_input():
    with pytest.raises(ValueError, match="n_components = 9"):
        PCA(n_components=9).fit(_data(f=7))
    with pytest.raises(ValueError, match="must be positive"):
        PCA(n_components=0)
    with pytest.raises(RuntimeError, match="before fit"):
        PCA(n_components=2).transform(_data())
