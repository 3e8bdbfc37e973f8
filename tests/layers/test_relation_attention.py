"""Relation-aware self-attention against a dense, element-wise reading of MMGRec Eq. 14-19;
the cached decoder against its full-sequence path."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mm.model.layers.relation_attention import (
    CachedTransformerDecoder,
    RelationAwareEncoder,
    RelationAwareSelfAttention,
)


def _reference(layer: RelationAwareSelfAttention, x, user, padding_mask):
    """Eq. 14-18 term by term, one (b, head, i, j) at a time."""
    b_size, n, d = x.shape
    dh = layer.head_dim
    s = layer.user_scale(user)  # [B, 3]
    out = torch.zeros(b_size, n, layer.n_heads * dh)
    for b in range(b_size):
        w_uq = s[b, 0] * layer.user_query.weight.T  # W_u^Q = MLP(h_u) U^Q  (Eq. 18)
        w_uk = s[b, 1] * layer.user_key.weight.T
        w_uv = s[b, 2] * layer.user_value.weight.T
        for h in range(layer.n_heads):
            rows = slice(h * dh, (h + 1) * dh)
            w_q = layer.query.weight[rows].T
            w_k = layer.key.weight[rows].T
            w_v = layer.value.weight[rows].T
            for i in range(n):
                eps = torch.full((n,), float("-inf"))
                for j in range(n):
                    if padding_mask[b, j]:
                        continue
                    e_i, e_j = x[b, i], x[b, j]
                    eps[j] = ((e_i @ w_q) @ (e_j @ w_k) + (e_i @ w_uq) @ (e_j @ w_uk)) / math.sqrt(
                        dh
                    )  # Eq. 17
                alpha = torch.softmax(eps, dim=0)  # Eq. 16
                for j in range(n):
                    if not padding_mask[b, j]:
                        p_j = x[b, j] @ w_uv  # Eq. 14
                        out[b, i, rows] += alpha[j] * (x[b, j] @ w_v + p_j)  # Eq. 15
    return layer.out(out)


def _layer(**kwargs):
    torch.manual_seed(0)
    return RelationAwareSelfAttention(d_model=6, n_heads=2, **kwargs).eval()


def test_equals_dense_reference_with_padding():
    layer = _layer()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 6, generator=g)
    user = torch.randn(3, 6, generator=g)
    padding = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(
            layer(x, user, padding), _reference(layer, x, user, padding), rtol=1e-5, atol=1e-5
        )


def test_single_head_equals_matrix_form_eq19():
    torch.manual_seed(0)
    layer = RelationAwareSelfAttention(d_model=6, n_heads=1).eval()
    g = torch.Generator().manual_seed(2)
    e = torch.randn(1, 4, 6, generator=g)
    user = torch.randn(1, 6, generator=g)
    with torch.no_grad():
        s = layer.user_scale(user)[0]
        wq, wk, wv = layer.query.weight.T, layer.key.weight.T, layer.value.weight.T
        wuq, wuk, wuv = (
            s[i] * m.weight.T
            for i, m in enumerate((layer.user_query, layer.user_key, layer.user_value))
        )
        attn = torch.softmax(e[0] @ (wq @ wk.T + wuq @ wuk.T) @ e[0].T / math.sqrt(6), dim=-1)
        expected = layer.out(attn @ e[0] @ (wv + wuv))  # Eq. 19
        torch.testing.assert_close(layer(e, user)[0], expected, rtol=1e-5, atol=1e-5)


def test_user_changes_attention_only_when_relation_aware():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, generator=g)
    u1, u2 = torch.randn(1, 6, generator=g), torch.randn(1, 6, generator=g)
    with torch.no_grad():
        aware = _layer()
        assert not torch.allclose(aware(x, u1), aware(x, u2))
        plain = _layer(relation_aware=False)
        torch.testing.assert_close(plain(x, u1), plain(x, u2))
        assert plain.state_dict().keys() == aware.state_dict().keys()  # checkpoints interchange
    with pytest.raises(ValueError, match="user"):
        aware(x)


def test_permutation_equivariant_and_padding_inert():
    """No positional signal: permuting the items permutes the outputs; padding content is unseen."""
    encoder = RelationAwareEncoder(n_layers=2, d_model=6, n_heads=2, dim_feedforward=8).eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 6, generator=g)
    user = torch.randn(2, 6, generator=g)
    padding = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    perm = torch.tensor([2, 0, 1, 3, 4])
    with torch.no_grad():
        out = encoder(x, user, padding)
        torch.testing.assert_close(encoder(x[:, perm], user, padding[:, perm]), out[:, perm])
        noisy = x.clone()
        noisy[0, 3:] = 100.0
        torch.testing.assert_close(encoder(noisy, user, padding)[0, :3], out[0, :3])
        # A user with no item at all gives finite outputs, not NaN.
        assert torch.isfinite(encoder(x, user, torch.ones(2, 5, dtype=torch.bool))).all()


def test_cached_decoding_equals_full_forward():
    torch.manual_seed(5)
    decoder = CachedTransformerDecoder(d_model=8, n_heads=2, n_layers=2, dim_feedforward=16).eval()
    g = torch.Generator().manual_seed(6)
    memory = torch.randn(3, 4, 8, generator=g)
    memory_padding = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    tgt = torch.randn(3, 5, 8, generator=g)
    with torch.no_grad():
        full = decoder(tgt, memory, memory_padding)
        cache = decoder.start(memory, memory_padding)
        steps = []
        for t in range(5):
            out, cache = decoder.step(tgt[:, t : t + 1], cache)
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
        # Reordering the cache equals decoding the reordered batch.
        index = torch.tensor([2, 2, 0])
        cache = decoder.reorder(decoder.start(memory, memory_padding), index)
        first, _ = decoder.step(tgt[index, :1], cache)
        torch.testing.assert_close(first, full[index, :1], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(full).all()
