"""MS-VQ: hard Gumbel selection with gradients to the MLP, the EM update of Eq. 10, state."""

from __future__ import annotations

import pytest
import torch

from recbole_mm.model.layers.sequence_vq import SequenceQuantizer, assignment_means


def _vq(**kwargs):
    torch.manual_seed(0)
    options = dict(seq_len=3, dim=2, n_codes=4, tau=0.1)
    options.update(kwargs)
    return SequenceQuantizer(**options)


def test_selection_is_hard_in_forward_and_differentiable_for_the_mlp():
    vq = _vq().train()
    vq.codebook.normal_()
    vq.initialised.fill_(True)
    s = torch.randn(16, 3, 2)
    quantized, codes = vq(s, update=False)
    # Forward: each output is exactly one code vector, the one in `codes`.
    torch.testing.assert_close(quantized, vq.codebook[codes], rtol=0, atol=0)
    # Backward: the gradient reaches the selection MLP (not the codebook, which is a buffer).
    quantized.sum().backward()
    grads = [p.grad for p in vq.selector.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert not vq.codebook.requires_grad


def test_eval_picks_the_largest_logit_deterministically():
    vq = _vq().eval()
    vq.codebook.normal_()
    s = torch.randn(8, 3, 2)
    _, codes = vq(s)
    assert torch.equal(codes, vq.logits(s).argmax(-1))
    before = vq.codebook.clone()
    assert torch.equal(vq(s)[1], codes) and torch.equal(vq.codebook, before)


def test_em_update_equals_the_mean_of_the_assigned_sequences():
    # Hand-made batch: sequences 0 and 2 choose code 1, sequence 1 code 3; codes 0, 2 unused.
    s = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
            [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]],
            [[3.0, 0.0], [1.0, 0.0], [1.0, 2.0]],
        ]
    )
    codes = torch.tensor([1, 3, 1])
    means, counts = assignment_means(s, codes, 4)
    assert counts.tolist() == [0, 2, 0, 1]
    torch.testing.assert_close(means[1], torch.tensor([[2.0, 1.0], [2.0, 2.0], [3.0, 4.0]]))
    torch.testing.assert_close(means[3], s[1])

    vq = _vq()
    old = torch.full((4, 3, 2), 7.0)
    vq.codebook.copy_(old)
    vq.em_update(s, codes)  # rate 1: Eq. 10 as written
    torch.testing.assert_close(vq.codebook[1], means[1])
    torch.testing.assert_close(vq.codebook[3], means[3])
    # Codes no sequence chose keep their value.
    torch.testing.assert_close(vq.codebook[[0, 2]], old[[0, 2]])

    half = _vq(update_rate=0.5)
    half.codebook.copy_(old)
    half.em_update(s, codes)
    torch.testing.assert_close(half.codebook[1], 0.5 * old[1] + 0.5 * means[1])


def test_training_forward_initialises_then_updates_the_codebook_and_it_is_saved():
    vq = _vq().train()
    s = torch.randn(10, 3, 2)
    _, codes = vq(s)
    assert bool(vq.initialised)
    means, counts = assignment_means(s, codes, 4)
    chosen = counts > 0
    torch.testing.assert_close(vq.codebook[chosen], means[chosen])
    state = vq.state_dict()
    assert {"codebook", "initialised"} <= set(state)
    other = _vq()
    other.load_state_dict(state)
    assert torch.equal(other.codebook, vq.codebook)


def test_bad_arguments():
    with pytest.raises(ValueError, match="update_rate = 0"):
        _vq(update_rate=0.0)
    with pytest.raises(ValueError, match="tau = 0"):
        _vq(tau=0.0)
    with pytest.raises(ValueError, match=r"expects \[B, 3, 2\]"):
        _vq()(torch.randn(4, 5, 2))
