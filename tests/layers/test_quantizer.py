"""Residual quantiser: k-means, round trips, the Eq. 10 loss, initialisation, collisions."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.quantizer import (
    CodeSpaceFull,
    ResidualQuantizer,
    append_collision_index,
    collision_report,
    kmeans,
    mlp,
    reassign_last_level,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (means.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=_gen())).float()
    centroids = kmeans(x, 3, generator=_gen(1))
    assert centroids.shape == (3, 2)
    nearest = torch.cdist(means, centroids).min(1).values
    assert (nearest < 0.1).all()
    torch.testing.assert_close(centroids, kmeans(x, 3, generator=_gen(1)))


def test_kmeans_with_fewer_points_than_centroids_keeps_every_point():
    x = torch.randn(4, 3, generator=_gen())
    centroids = kmeans(x, 10, generator=_gen())
    assert centroids.shape == (10, 3)
    assert torch.cdist(x, centroids).min(1).values.max() < 1e-6  # each point is a centroid
    assert torch.unique(centroids, dim=0).shape[0] == 10  # no duplicated centroid
    with pytest.raises(ValueError, match="k = 0"):
        kmeans(x, 0)


def _hierarchical_quantizer(levels=3, size=5, dim=4):
    """Codebooks at scales 1, 0.1, 0.01, ...: any code tuple is recovered from its sum."""
    rq = ResidualQuantizer(n_levels=levels, codebook_size=size, dim=dim, kmeans_init=False)
    base = torch.nn.functional.normalize(torch.randn(size, dim, generator=_gen(3)), dim=1)
    # Well separated directions: a random orthogonal-ish set scaled per level.
    with torch.no_grad():
        for level in range(levels):
            rq.codebooks[level] = base * 10.0 ** (-level) * (1 + torch.arange(size)[:, None])
    return rq


def test_encode_decode_round_trip():
    rq = _hierarchical_quantizer()
    codes = torch.randint(5, (64, 3), generator=_gen())
    assert torch.equal(rq.encode(rq.decode(codes)), codes)
    x = torch.randn(32, 4, generator=_gen(2))
    quantized, forward_codes, _ = rq.eval()(x)
    assert torch.equal(forward_codes, rq.encode(x))
    torch.testing.assert_close(quantized, rq.decode(forward_codes))


def test_residuals_and_loss_follow_eq10():
    rq = ResidualQuantizer(n_levels=2, codebook_size=3, dim=2, beta=0.25, kmeans_init=False)
    x = torch.randn(8, 2, generator=_gen())
    codes = rq.encode(x)
    residuals = rq.residuals(x)
    torch.testing.assert_close(residuals[0], x)
    torch.testing.assert_close(residuals[1], x - rq.codebooks[0, codes[:, 0]].detach())
    # Each level picks its nearest code (Eq. 7).
    for level in range(2):
        distances = torch.cdist(residuals[level], rq.codebooks[level].detach())
        assert torch.equal(codes[:, level], distances.argmin(1))
    _, _, loss = rq(x)
    expected = sum(
        1.25 * (residuals[m] - rq.codebooks[m, codes[:, m]]).pow(2).mean() for m in range(2)
    )
    torch.testing.assert_close(loss, expected)


def test_straight_through_gradient_and_codebook_gradient():
    rq = ResidualQuantizer(n_levels=2, codebook_size=4, dim=3, kmeans_init=False)
    x = torch.randn(6, 3, generator=_gen(), requires_grad=True)
    quantized, _, loss = rq(x)
    (quantized.sum() + loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    x.grad = None
    quantized, _, _ = rq(x)
    quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # identity gradient
    assert rq.codebooks.grad is not None and rq.codebooks.grad.abs().sum() > 0


def test_kmeans_init_on_first_training_batch_only():
    x = torch.randn(16, 4, generator=_gen())
    rq = ResidualQuantizer(n_levels=2, codebook_size=16, dim=4)
    assert not bool(rq.initialised)
    rq.eval()(x)
    assert not bool(rq.initialised)  # evaluation never initialises
    quantized, codes, loss = rq.train()(x)
    assert bool(rq.initialised)
    # 16 distinct points, 16 centroids: level 1 reproduces every point exactly.
    assert loss.item() < 1e-8
    assert torch.unique(codes[:, 0]).numel() == 16
    torch.testing.assert_close(quantized, x)
    # A reloaded quantiser keeps its codebooks on its first training batch.
    clone = ResidualQuantizer(n_levels=2, codebook_size=16, dim=4)
    clone.load_state_dict(rq.state_dict())
    clone.train()(torch.randn(16, 4, generator=_gen(9)))
    torch.testing.assert_close(clone.codebooks, rq.codebooks)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="codebook_size = 0"):
        ResidualQuantizer(n_levels=2, codebook_size=0, dim=4)
    rq = ResidualQuantizer(n_levels=2, codebook_size=4, dim=3)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        rq(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rq.decode(torch.tensor([[0, 4]]))


def test_collision_report():
    codes = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 1], [1, 1], [1, 1], [-1, -1]])
    report = collision_report(codes, codebook_size=4)
    assert report["n_colliding_items"] == 5
    assert report["collision_rate"] == pytest.approx(5 / 6)
    assert report["max_items_per_code"] == 3
    assert report["usage_per_level"] == [0.5, 0.5]
    assert collision_report(torch.tensor([[0, 1], [1, 0]]))["collision_rate"] == 0.0


def _brute_force_index(codes, order):
    extra = []
    for i, row in enumerate(codes.tolist()):
        if min(row) < 0:
            extra.append(-1)
            continue
        peers = [j for j, other in enumerate(codes.tolist()) if other == row]
        key = (lambda j: (-order[j], j)) if order is not None else (lambda j: j)
        extra.append(sorted(peers, key=key).index(i))
    return extra


@pytest.mark.parametrize("with_order", [False, True])
def test_append_collision_index_makes_rows_unique(with_order):
    codes = torch.randint(3, (60, 2), generator=_gen())
    codes[5] = -1
    order = torch.randint(4, (60,), generator=_gen(1)).float() if with_order else None
    out = append_collision_index(codes, order=order)
    assert out.shape == (60, 3)
    assert torch.equal(out[:, :2], codes)
    expected = _brute_force_index(codes, None if order is None else order.tolist())
    assert out[:, 2].tolist() == expected
    valid = out[(codes >= 0).all(1)]
    assert torch.unique(valid, dim=0).shape[0] == valid.shape[0]
    assert collision_report(out)["collision_rate"] == 0.0


def test_append_collision_index_popularity_first():
    codes = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 0]])
    popularity = torch.tensor([3.0, 9.0, 5.0, 1.0])
    assert append_collision_index(codes, order=popularity)[:, 2].tolist() == [2, 0, 1, 0]


def test_reassign_last_level_resolves_collisions():
    codes = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 1], [0, 2]])
    residuals = torch.zeros(2, 5, 2)
    residuals[1, 1] = torch.tensor([3.0, 0.0])  # nearest last-level code: 3
    books = torch.zeros(2, 4, 2)
    books[1] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
    books[0] = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [-9.0, 9.0]])
    popularity = torch.tensor([1, 5, 9, 1, 1])
    out = reassign_last_level(codes, residuals, books, popularity)
    assert out[2].tolist() == [0, 1]  # the most popular keeps its codes
    assert out[1].tolist() == [0, 3]  # nearest free code under prefix (0,)
    assert out[0, 0] == 0 and out[0, 1] not in (1, 2, 3)
    assert torch.unique(out, dim=0).shape[0] == 5
    assert torch.equal(out[3:], codes[3:])
    # Prefix (0,) full: the first code moves to the nearest other one with room.
    crowded = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3], [0, 3]])
    out = reassign_last_level(crowded, torch.zeros(2, 5, 2), books, torch.arange(5, 0, -1))
    assert out[:4].tolist() == crowded[:4].tolist()
    assert out[4, 0] == 1 and torch.unique(out, dim=0).shape[0] == 5
    # Both levels full around the group: a clear error, never a silent duplicate.
    full = torch.tensor([[0, 0], [0, 0]])
    with pytest.raises(CodeSpaceFull, match="no free code tuple near item row 1"):
        reassign_last_level(full, torch.zeros(2, 2, 1), torch.zeros(2, 1, 1), torch.ones(2))


def test_mlp_puts_a_relu_between_layers_and_none_after_the_last():
    net = mlp([6, 5, 4, 3])
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in net[::2]] == [(6, 5), (5, 4), (4, 3)]
    assert net(torch.randn(2, 6)).shape == (2, 3)
    assert [type(m).__name__ for m in mlp([6, 3])] == ["Linear"]
    with pytest.raises(ValueError, match="an input and an output width"):
        mlp([6])


def test_rq_vae_parts_mirror_each_other():
    from recbole_mm.model.layers.quantizer import rq_vae

    encoder, quantizer, decoder = rq_vae(
        in_dim=12,
        hidden_sizes=[8, 6],
        latent_dim=4,
        n_levels=3,
        codebook_size=5,
        beta=0.25,
        kmeans_init=False,
    )
    widths = [m.out_features for m in encoder if isinstance(m, torch.nn.Linear)]
    assert widths == [8, 6, 4]
    assert [m.out_features for m in decoder if isinstance(m, torch.nn.Linear)] == [6, 8, 12]
    assert quantizer.codebooks.shape == (3, 5, 4)
    x = torch.randn(7, 12)
    quantized, codes, _ = quantizer(encoder(x))
    assert codes.shape == (7, 3) and decoder(quantized).shape == (7, 12)
