"""Semantic-id trie and constrained beam search, checked against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recbole_mm.evaluation import evaluation_history
from recbole_mm.model.layers.semantic_ids import (
    SemanticIdTrie,
    beam_scores_to_matrix,
    constrained_beam_search,
    history_mask,
    ranking_scores,
    reorder_state,
)

VOCAB = [3, 4, 2]


@pytest.fixture(params=[0, 12, 1 << 22], ids=["sorted-tables", "mixed", "dense-tables"])
def dense_limit(request):
    """Both lookup paths: sorted tables + searchsorted only, dense child tables, or dense
    tables for the first two levels only (3 x 1 and 3 x 4 entries) and sorted ones below."""
    return request.param


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _codes(n_items=20, seed=0):
    """Unique random tuples over VOCAB (24 possible), item 0 and one more marked invalid."""
    every = torch.tensor(list(itertools.product(*[range(v) for v in VOCAB])))
    pick = torch.randperm(every.shape[0], generator=_gen(seed))[:n_items]
    codes = every[pick].clone()
    codes[0] = -1
    codes[7] = torch.tensor([1, -1, 0])
    return codes


def _valid_items(codes, excluded_row=None):
    return [
        i
        for i, row in enumerate(codes.tolist())
        if min(row) >= 0 and (excluded_row is None or not excluded_row[i])
    ]


def _brute_allowed(codes, prefix, excluded_row=None):
    level = len(prefix)
    allowed = [False] * VOCAB[level]
    for i in _valid_items(codes, excluded_row):
        row = codes[i].tolist()
        if row[:level] == list(prefix):
            allowed[row[level]] = True
    return allowed


def test_allowed_matches_brute_force_with_and_without_exclusion(dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    excluded = torch.rand(1, codes.shape[0], generator=_gen(4)) < 0.4
    for level in range(len(VOCAB)):
        prefixes = list(itertools.product(*[range(v) for v in VOCAB[:level]]))
        prefix = torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), level)
        got = trie.allowed(prefix)
        expected = [_brute_allowed(codes, p) for p in prefixes]
        assert got.tolist() == expected
        got = trie.allowed(prefix, excluded=excluded.expand(len(prefixes), -1))
        expected = [_brute_allowed(codes, p, excluded[0].tolist()) for p in prefixes]
        assert got.tolist() == expected
    # The same mask, changed in place between calls, is read afresh.
    prefix = torch.zeros(1, 0, dtype=torch.long)
    mask = torch.zeros(1, codes.shape[0], dtype=torch.bool)
    assert trie.allowed(prefix, excluded=mask).tolist() == [_brute_allowed(codes, ())]
    mask[0] = True
    assert not trie.allowed(prefix, excluded=mask).any()
    # Out-of-range tokens in a prefix lead nowhere.
    assert not trie.allowed(torch.tensor([[5, 0], [-1, 0]])).any()


def test_items_round_trip_and_invalid_tuples(dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    valid = _valid_items(codes)
    assert trie.items(codes[valid]).tolist() == valid
    unused = [
        t for t in itertools.product(*[range(v) for v in VOCAB]) if list(t) not in codes.tolist()
    ]
    assert trie.items(torch.tensor(unused[:3])).tolist() == [-1, -1, -1]
    assert trie.items(torch.tensor([[1, -1, 0], [9, 0, 0]])).tolist() == [-1, -1]


def test_trie_refuses_collisions_and_out_of_vocabulary_codes():
    with pytest.raises(ValueError, match="append_collision_index"):
        SemanticIdTrie(torch.tensor([[0, 1], [0, 1]]), vocab_sizes=[2, 2])
    with pytest.raises(ValueError, match="outside vocab_sizes"):
        SemanticIdTrie(torch.tensor([[0, 2]]), vocab_sizes=[2, 2])
    with pytest.raises(ValueError, match="one size >= 1 per code level"):
        SemanticIdTrie(torch.tensor([[0, 1]]), vocab_sizes=[2])


class TableStep:
    """log p(token | prefix, user) from a fixed random table."""

    def __init__(self, seed=0, user_dependent=True, n_users=8):
        g = _gen(seed)
        n_prefixes = [math.prod(VOCAB[:level]) for level in range(len(VOCAB))]
        self.tables = [torch.randn(n_users, n, v, generator=g) for n, v in zip(n_prefixes, VOCAB)]
        self.user_dependent = user_dependent
        self.calls = 0

    def log_probs(self, user, prefix):
        level = prefix.shape[1]
        index = torch.zeros(prefix.shape[0], dtype=torch.long, device=prefix.device)
        for j in range(level):
            index = index * VOCAB[j] + prefix[:, j]
        user = user if self.user_dependent else torch.zeros_like(user)
        logits = self.tables[level].to(prefix.device)[user, index]
        return torch.log_softmax(logits, 1)


def _initial_state(batch, device="cpu"):
    return (
        torch.arange(batch, device=device),
        torch.zeros(batch, 0, dtype=torch.long, device=device),
    )


def _history_reorder(state, index):
    user, history = state
    return user[index], history[index]


class HistoryStep(TableStep):
    """The state carries (user, token history), appended by the step itself.

    If the search reordered the state wrongly, the history would disagree with ``tokens`` (the
    assertion fails) and the user index would pick the wrong table rows (scores differ).
    """

    def __call__(self, tokens, state):
        self.calls += 1
        if tokens.shape[1] == 0:
            self.first_rows = tokens.shape[0]
        user, history = state
        # history lags tokens by the last chosen token, which the search appended.
        if tokens.shape[1]:
            history = torch.cat([history, tokens[:, -1:]], 1)
        assert torch.equal(history, tokens)
        return self.log_probs(user, tokens), (user, history)


def _brute_force(table, codes, user, excluded_row=None):
    scored = []
    for i in _valid_items(codes, excluded_row):
        row = codes[i]
        total = 0.0
        for level in range(len(VOCAB)):
            prefix = row[:level].reshape(1, level)
            total += table.log_probs(torch.tensor([user]), prefix)[0, row[level]].item()
        scored.append((total, i))
    return sorted(scored, reverse=True)


@pytest.mark.parametrize("first_step_per_user", [False, True])
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_beam_search_matches_brute_force(with_exclusion, first_step_per_user, dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    batch = 5
    excluded = None
    if with_exclusion:
        excluded = torch.rand(batch, codes.shape[0], generator=_gen(2)) < 0.3
        excluded[3] = True  # a user who may receive nothing
        excluded[3, 0] = False  # ... except the padding row, which is never valid anyway
    # beam >= the node count at every depth: nothing is pruned, the search is exact.
    beam = 24
    table = HistoryStep(seed=1)
    items, scores = constrained_beam_search(
        table,
        trie,
        batch_size=batch,
        beam_size=beam,
        excluded=excluded,
        state=_initial_state(batch),
        reorder=_history_reorder,
        first_step_per_user=first_step_per_user,
    )
    assert items.shape == scores.shape == (batch, beam)
    assert table.calls == len(VOCAB)
    assert table.first_rows == (batch if first_step_per_user else batch * beam)
    for user in range(batch):
        row = None if excluded is None else excluded[user].tolist()
        expected = _brute_force(table, codes, user, row)
        n = len(expected)
        assert items[user, :n].tolist() == [i for _, i in expected]
        torch.testing.assert_close(scores[user, :n], torch.tensor([s for s, _ in expected]))
        # beam exceeds the valid items: the rest is dropped, never padded.
        assert (items[user, n:] == -1).all()
        assert (scores[user, n:] == float("-inf")).all()
    if with_exclusion:
        assert (items[3] == -1).all()


def test_small_beams_only_return_valid_unexcluded_distinct_items(dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    batch = 8
    excluded = torch.rand(batch, codes.shape[0], generator=_gen(5)) < 0.5
    for beam in (1, 2, 3, 7):
        table = TableStep(seed=beam)
        table_state = _initial_state(batch)

        def step(tokens, state, table=table):
            return table.log_probs(state[0], tokens), state

        step.reorder = lambda state, index: (state[0][index], state[1])
        items, scores = constrained_beam_search(
            step, trie, batch_size=batch, beam_size=beam, excluded=excluded, state=table_state
        )
        for user in range(batch):
            allowed = set(_valid_items(codes, excluded[user].tolist()))
            found = [i for i in items[user].tolist() if i >= 0]
            assert set(found) <= allowed and len(set(found)) == len(found)
            assert len(found) == min(beam, len(allowed))
            finite = scores[user][: len(found)]
            assert torch.isfinite(finite).all() and (finite[:-1] >= finite[1:]).all()
        if beam == 1:  # greedy decoding: follow the best allowed token at every level
            for user in range(batch):
                prefix = torch.zeros(1, 0, dtype=torch.long)
                for _ in range(len(VOCAB)):
                    mask = trie.allowed(prefix, excluded=excluded[user : user + 1])
                    lp = table.log_probs(torch.tensor([user]), prefix).masked_fill(~mask, -1e9)
                    prefix = torch.cat([prefix, lp.argmax(1, keepdim=True)], 1)
                assert items[user, 0].item() == trie.items(prefix).item()


def test_each_user_is_searched_independently(dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    table = TableStep(seed=3)

    def step(tokens, state):
        return table.log_probs(state, tokens), state

    excluded = torch.rand(4, codes.shape[0], generator=_gen(6)) < 0.3
    items, scores = constrained_beam_search(
        step, trie, batch_size=4, beam_size=3, excluded=excluded, state=torch.arange(4)
    )
    for user in range(4):
        alone_items, alone_scores = constrained_beam_search(
            step,
            trie,
            batch_size=1,
            beam_size=3,
            excluded=excluded[user : user + 1],
            state=torch.tensor([user]),
        )
        assert torch.equal(items[user], alone_items[0])
        torch.testing.assert_close(scores[user], alone_scores[0])


def test_bad_step_output_and_arguments_are_refused(dense_limit):
    trie = SemanticIdTrie(_codes(), vocab_sizes=VOCAB, dense_limit=dense_limit)

    def step(tokens, state):
        return torch.zeros(tokens.shape[0], 99), state

    with pytest.raises(ValueError, match="expected \\[6, 3\\]"):
        constrained_beam_search(step, trie, batch_size=2, beam_size=3)
    with pytest.raises(ValueError, match="excluded must be bool"):
        constrained_beam_search(
            step, trie, batch_size=2, beam_size=3, excluded=torch.zeros(2, 5, dtype=torch.bool)
        )


def test_default_reorder_follows_nested_states():
    state = {"memory": torch.arange(6).reshape(3, 2), "cache": [(torch.arange(3), None)], "n": 4}
    out = reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["memory"].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert out["cache"][0][0].tolist() == [2, 2, 0] and out["cache"][0][1] is None
    assert out["n"] == 4


def test_beam_scores_to_matrix():
    items = torch.tensor([[2, 0, -1], [1, -1, -1]])
    scores = torch.tensor([[-0.25, -0.5, float("-inf")], [-0.75, float("-inf"), float("-inf")]])
    matrix = beam_scores_to_matrix(items, scores, n_items=4)
    inf = float("-inf")
    assert matrix.tolist() == [[-0.5, inf, -0.25, inf], [inf, -0.75, inf, inf]]


def _hits(matrix, positive, k):
    """RecBole's count: topk over the row, then a lookup of the positives (bool [B, n])."""
    return positive.gather(1, matrix.topk(k, dim=1).indices).sum(1)


def test_ranking_scores_refuses_rows_whose_top_k_reaches_unscored_items():
    inf = float("-inf")
    items = torch.tensor([[5, 3, -1], [2, 4, 1]])
    scores = torch.tensor([[-0.1, -0.2, inf], [-0.1, -0.2, -0.3]])
    outside = torch.ones(2, 8, dtype=torch.bool)
    outside[0, [0, 5, 3]] = outside[1, [0, 2, 4, 1]] = False
    # Without the check row 0's third slot goes to a -inf item, a positive here.
    assert _hits(beam_scores_to_matrix(items, scores, n_items=8), outside, 3)[0] == 1
    with pytest.raises(RuntimeError, match="2 rankable items for 1 row"):
        ranking_scores(items, scores, n_items=8, k=3)
    matrix = ranking_scores(items[1:], scores[1:], n_items=8, k=3)
    assert _hits(matrix, outside[1:], 3).tolist() == [0]
    # A returned item the evaluator masks does not count towards k.
    masked = torch.zeros(1, 8, dtype=torch.bool)
    masked[0, 4] = True
    with pytest.raises(RuntimeError, match="2 rankable items"):
        ranking_scores(items[1:], scores[1:], n_items=8, k=3, masked=masked)


def test_ranking_scores_accepts_rows_holding_every_unmasked_item():
    """Fewer unmasked items than k: all of them ranked, the top-K completed from masked items
    and item 0, which RecBole never counts as positives."""
    inf = float("-inf")
    masked = torch.tensor([[False, True, False, True, True, False]])  # unmasked: 2 and 5
    matrix = ranking_scores(
        torch.tensor([[5, 2, 1, -1]]),
        torch.tensor([[-0.1, -0.2, -0.3, inf]]),
        n_items=6,
        k=4,
        masked=masked,
    )
    assert matrix.isfinite().nonzero()[:, 1].tolist() == [2, 5]  # masked item 1 dropped
    with pytest.raises(RuntimeError, match="1 rankable items"):
        ranking_scores(
            torch.tensor([[5, -1]]), torch.tensor([[-0.1, inf]]), n_items=6, k=4, masked=masked
        )


def test_history_mask_and_evaluation_history():
    history = torch.tensor([[3, 1, 0], [0, 0, 0]])
    assert history_mask(history, n_items=5).tolist() == [
        [False, True, False, True, False],
        [False] * 5,
    ]

    class Loader:  # what RecBole's FullSortEvalDataLoader holds, per user id
        is_sequential = False
        uid2history_item = [None, torch.tensor([4, 2]), torch.tensor([], dtype=torch.long)]

    assert evaluation_history(Loader(), n_users=4).tolist() == [[0, 0], [2, 4], [0, 0], [0, 0]]
    Loader.is_sequential = True  # a sequential loader masks nothing
    assert evaluation_history(Loader(), n_users=4) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_search_matches_cpu(dense_limit):
    codes = _codes()
    trie = SemanticIdTrie(codes, vocab_sizes=VOCAB, dense_limit=dense_limit)
    excluded = torch.rand(6, codes.shape[0], generator=_gen(7)) < 0.3
    table = TableStep(seed=4)

    def step(tokens, state):
        assert tokens.is_cuda == state.is_cuda
        return table.log_probs(state, tokens), state

    results = []
    for device in ("cpu", "cuda"):
        results.append(
            constrained_beam_search(
                step,
                trie,
                batch_size=6,
                beam_size=5,
                excluded=excluded.to(device),
                state=torch.arange(6, device=device),
            )
        )
    assert results[1][0].is_cuda
    assert torch.equal(results[0][0], results[1][0].cpu())
    torch.testing.assert_close(results[0][1], results[1][1].cpu())
    assert trie.allowed(torch.zeros(2, 1, dtype=torch.long, device="cuda")).is_cuda
