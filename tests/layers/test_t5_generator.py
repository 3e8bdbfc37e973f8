"""Code generators: token maps, losses, trie-constrained beam search against exhaustive ranking."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_code_generator

from recbole_mm.model.layers.semantic_ids import SemanticIdTrie
from recbole_mm.model.layers.t5_generator import (
    CodeGenerator,
    CodeTokens,
    code_token_names,
    count_parameters,
)

VOCAB = [4, 3, 3]


def _codes(n_items=12, seed=0):
    """Unique random code tuples; row 0 (padding) and the last row (no id) are -1."""
    g = torch.Generator().manual_seed(seed)
    all_tuples = torch.cartesian_prod(*[torch.arange(v) for v in VOCAB])
    codes = all_tuples[torch.randperm(len(all_tuples), generator=g)[:n_items]]
    codes[0] = -1
    codes[-1] = -1
    return codes


def _generator(backbone, seed=0):
    return tiny_code_generator(backbone, VOCAB, seed=seed)


def _prompts(gen, codes, seed=1):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, codes.shape[0] - 1, (3, 4), generator=g)
    items[1, 2:] = 0  # a shorter history, right-padded
    tokens = gen.tokens.tokens(codes[items]).flatten(1)  # [3, 12]
    mask = (items > 0).repeat_interleave(len(VOCAB), 1).long()
    return tokens, mask


def test_token_names_and_round_trip():
    names = code_token_names(VOCAB)
    assert names[:2] == ["<a_0>", "<a_1>"] and names[4] == "<b_0>" and len(names) == 10
    tokens = CodeTokens(vocab_sizes=VOCAB, offset=3, pad=0)
    codes = _codes()
    t = tokens.tokens(codes)
    assert (t[0] == 0).all()
    assert torch.equal(tokens.codes(t[1:-1]), codes[1:-1])
    # Level l's tokens lie in its own range [3 + sum(VOCAB[:l]), 3 + sum(VOCAB[:l + 1])).
    for level in range(len(VOCAB)):
        lo = 3 + sum(VOCAB[:level])
        assert ((t[1:-1, level] >= lo) & (t[1:-1, level] < lo + VOCAB[level])).all()
    # A token of the wrong level is no code.
    assert (tokens.codes(t[1:-1, [1, 0, 2]])[:, :2] == -1).all()


@pytest.mark.parametrize("backbone", ["t5", "decoder"])
def test_loss_and_log_likelihood(backbone):
    gen = _generator(backbone)
    codes = _codes()
    prompt, mask = _prompts(gen, codes)
    target = gen.tokens.tokens(codes[torch.tensor([1, 2, 3])])
    gen.train()
    loss = gen.loss(prompt, mask, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    gen.eval()
    ll = gen.log_likelihood(prompt, mask, target)
    torch.testing.assert_close(-ll.sum() / target.numel(), gen.loss(prompt, mask, target))


@pytest.mark.parametrize("backbone", ["t5", "decoder"])
@pytest.mark.parametrize("backend", ["hf", "shared"])
def test_exhaustive_beam_equals_ranking_by_likelihood(backbone, backend):
    """With as many beams as valid items the search is exhaustive: it must return every valid
    item, ranked by the log-likelihood of its codes, and never an invalid one."""
    gen = _generator(backbone)
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB)
    prompt, mask = _prompts(gen, codes)
    valid = torch.arange(1, codes.shape[0] - 1)
    items, scores = gen.generate(prompt, mask, trie=trie, beam_size=len(valid), backend=backend)
    for b in range(prompt.shape[0]):
        assert sorted(items[b].tolist()) == valid.tolist()
        target = gen.tokens.tokens(codes[valid])
        ll = gen.log_likelihood(
            prompt[b : b + 1].expand(len(valid), -1),
            mask[b : b + 1].expand(len(valid), -1),
            target,
        )
        order = valid[ll.argsort(descending=True)]
        assert items[b].tolist() == order.tolist()
        torch.testing.assert_close(scores[b], ll.sort(descending=True).values, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone", ["t5", "decoder"])
def test_hf_generate_agrees_with_shared_search(backbone):
    gen = _generator(backbone, seed=3)
    codes = _codes(seed=2)
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB)
    prompt, mask = _prompts(gen, codes, seed=4)
    hf = gen.generate(prompt, mask, trie=trie, beam_size=4, backend="hf")
    shared = gen.generate(prompt, mask, trie=trie, beam_size=4, backend="shared")
    assert torch.equal(hf[0], shared[0])
    torch.testing.assert_close(hf[1], shared[1], atol=1e-4, rtol=0)


def test_more_beams_than_items_drops_the_rest():
    gen = _generator("t5")
    codes = torch.full((5, 3), -1)
    codes[1] = torch.tensor([0, 1, 2])
    codes[2] = torch.tensor([3, 0, 0])
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB)
    prompt = gen.tokens.tokens(codes[torch.tensor([[1, 2]])]).flatten(1)
    mask = torch.ones_like(prompt)
    for backend in ("hf", "shared"):
        items, scores = gen.generate(prompt, mask, trie=trie, beam_size=4, backend=backend)
        assert sorted(items[0, :2].tolist()) == [1, 2]
        assert (items[0, 2:] == -1).all() and torch.isinf(scores[0, 2:]).all()


def test_checkpoint_start_and_bad_checkpoint(tmp_path):
    small = _generator("t5")
    small.model.save_pretrained(tmp_path / "t5")
    gen = CodeGenerator(
        backbone="t5",
        vocab_sizes=[2, 2],
        d_model=0,
        d_ff=0,
        n_layers=0,
        n_heads=1,
        checkpoint=str(tmp_path / "t5"),
    )
    base = small.model.get_input_embeddings().num_embeddings
    assert gen.tokens.offset == base
    assert gen.model.get_input_embeddings().num_embeddings == base + 4
    # The pretrained rows are kept.
    assert torch.equal(
        gen.model.get_input_embeddings().weight[:base],
        small.model.get_input_embeddings().weight,
    )
    with pytest.raises(ValueError, match="t5_checkpoint = "):
        CodeGenerator(
            backbone="t5",
            vocab_sizes=[2],
            d_model=8,
            d_ff=8,
            n_layers=1,
            n_heads=1,
            checkpoint=str(tmp_path / "missing"),
        )
    with pytest.raises(ValueError, match="backbone"):
        CodeGenerator(backbone="gpt", vocab_sizes=[2], d_model=8, d_ff=8, n_layers=1, n_heads=1)


@pytest.mark.parametrize("backbone", ["t5", "decoder"])
def test_count_parameters_matches_a_built_generator(backbone):
    """Counted on the meta device, equal to the real build's count (CEMG's "w/o LLM" rule)."""
    built = tiny_code_generator(backbone, [5, 3])
    sizes = dict(
        vocab_sizes=[5, 3], d_model=8, d_ff=16, n_heads=2, dropout=0.0, max_prompt_tokens=24
    )
    counted = count_parameters(backbone=backbone, n_layers=1, **sizes)
    assert counted == sum(p.numel() for p in built.parameters())
    assert count_parameters(backbone=backbone, n_layers=2, **sizes) > counted
