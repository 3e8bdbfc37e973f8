"""SemanticIdRecommender: placeholder codes, code assignment and its report, the trie cache,
old checkpoints, the search call and full_sort_predict on a toy model; then a seeded golden run
of MMGRec and CEMG through the base (codes assigned, beams ranked)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import seeded_model, tiny_splits
from torch import nn

from recbole_mm.model.generative import SemanticIdRecommender, placeholder_codes
from recbole_mm.model.layers.quantizer import append_collision_index
from recbole_mm.smoke import tiny_settings


class Toy(SemanticIdRecommender, nn.Module):
    """Four items (and padding 0) with two levels of two codes. The tokenizer gives each item one
    code, colliding in pairs; the collision policy appends TIGER's index. The decoding step
    scores code ``c`` at level ``l`` by ``log_softmax(logits[l])[c]``, whatever the prefix, so
    an item's beam score is known in closed form."""

    legacy_state_keys = {"rec_ids": "item_codes", "rec_ids_assigned": "codes_assigned"}

    def __init__(self, *, beam_size: int = 2, max_topk: int = 2):
        super().__init__()
        self.n_items, self.vocab_sizes, self.codebook_size = 5, [2, 2], 2
        self.beam_size, self.max_topk = beam_size, max_topk
        self.init_item_codes(placeholder_codes(5, codebook_size=2, n_levels=2, offset=1))
        self.logits = nn.Parameter(torch.tensor([[0.0, -1.0], [0.0, -2.0]]))  # [level, code]
        self.tokenizer_codes = torch.tensor([[-1], [1], [0], [1], [0]])  # items 1, 3 and 2, 4
        self.masked = None

    def _tokenize_items(self):
        return self.tokenizer_codes, append_collision_index(self.tokenizer_codes)

    def _search_step(self, tokens, state):
        level = tokens.shape[1]
        return self.logits[level].log_softmax(-1).expand(tokens.shape[0], -1), state

    def _ranking_mask(self, interaction):
        return self.masked

    def _generate(self, interaction, masked):
        users = interaction["user"]
        state = torch.zeros(len(users), 1)  # batch-first: the default reorder follows the beams
        return self.constrained_search(state, batch_size=len(users), excluded=masked)

    def score(self, codes: tuple[int, int]) -> float:
        """The beam score of the item with these codes (CEMG Eq. 6)."""
        lp = self.logits.detach().log_softmax(-1)
        return float(lp[0, codes[0]] + lp[1, codes[1]])


ASSIGNED = torch.tensor([[-1, -1], [1, 0], [0, 0], [1, 1], [0, 1]])  # item -> codes


def test_placeholder_codes_are_the_digits_of_the_item_id():
    codes = placeholder_codes(6, codebook_size=2, n_levels=3, offset=1)
    expected = [[-1] * 3, [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0]]
    assert codes.tolist() == expected
    codes = placeholder_codes(4, codebook_size=3, n_levels=2)  # offset 0: item i -> digits of i
    assert codes.tolist() == [[-1, -1], [0, 1], [0, 2], [1, 0]]


def test_assign_codes_applies_the_collision_policy_and_reports(caplog):
    model = Toy()
    assert not bool(model.codes_assigned) and model.code_report == {}
    with caplog.at_level(logging.INFO, logger="recbole_mm.model.generative"):
        report = model.assign_codes()
    assert torch.equal(model.item_codes, ASSIGNED) and bool(model.codes_assigned)
    assert report is model.code_report
    assert report["before"]["collision_rate"] == 1.0  # every item shares its one code
    assert report["before"]["max_items_per_code"] == 2
    assert report["after"]["collision_rate"] == 0.0
    assert "Toy item codes: collision rate 1.0000 (4 items, largest group 2)" in caplog.text
    # Assigned codes are kept (a resumed generator) until the flag is cleared.
    model.tokenizer_codes = torch.tensor([[-1], [0], [0], [1], [1]])
    model.ensure_codes()
    assert torch.equal(model.item_codes, ASSIGNED)
    model.codes_assigned.fill_(False)
    model.ensure_codes()
    assert model.item_codes[1:, 0].tolist() == [0, 0, 1, 1]


def test_assign_codes_restores_the_training_mode():
    model = Toy().train()
    model.assign_codes()
    assert model.training
    model.eval().assign_codes()
    assert not model.training


def test_trie_follows_the_code_buffer():
    model = Toy()
    first = model.trie
    assert model.trie is first  # cached
    assert first.items(torch.tensor([[0, 0]])).tolist() == [1]  # placeholder: item 1 = (0, 0)
    model.assign_codes()
    assert model.trie.items(torch.tensor([[0, 0]])).tolist() == [2]
    # load_state_dict copies into the buffer in place: the next search sees the loaded codes.
    other = Toy()
    model.load_state_dict(other.state_dict())
    assert model.trie.items(torch.tensor([[0, 0]])).tolist() == [1]
    with torch.no_grad():
        model.item_codes[[1, 2]] = model.item_codes[[2, 1]]  # an in-place edit
    assert model.trie.items(torch.tensor([[0, 0]])).tolist() == [2]


def test_checkpoints_under_old_buffer_names_load():
    model = Toy()
    model.assign_codes()
    state = model.state_dict()
    old = {
        "logits": state["logits"],
        "rec_ids": state["item_codes"],
        "rec_ids_assigned": torch.tensor(True),
    }
    # Loaded as the model itself and, with a prefix, as a part of another module (DDP's module.).
    for target, prefix in ((Toy(), ""), (nn.Sequential(Toy()), "0.")):
        target.load_state_dict({prefix + k: v for k, v in old.items()})  # strict
        toy = target if prefix == "" else target[0]
        assert torch.equal(toy.item_codes, ASSIGNED) and bool(toy.codes_assigned)
        assert toy.trie.items(torch.tensor([[0, 0]])).tolist() == [2]
    # Written before the flag existed (CEMG): the codes load, the flag reads "not assigned".
    target = Toy()
    target.codes_assigned.fill_(True)
    target.load_state_dict({"logits": state["logits"], "item_codes": state["item_codes"]})
    assert torch.equal(target.item_codes, ASSIGNED) and not bool(target.codes_assigned)
    with pytest.raises(RuntimeError, match="item_codes"):
        Toy().load_state_dict({"logits": state["logits"]})  # no codes at all: still refused


def test_full_sort_predict_scatters_the_beams_into_minus_inf():
    model = Toy()
    model.assign_codes()
    model.masked = torch.zeros(2, 5, dtype=torch.bool)
    model.masked[0, 2] = True  # what RecBole masks for user 0: the search excludes item 2
    scores = model.full_sort_predict({"user": torch.tensor([0, 1])})
    expected = torch.full((2, 5), float("-inf"))
    expected[0, 1], expected[0, 4] = model.score((1, 0)), model.score((0, 1))
    expected[1, 2], expected[1, 1] = model.score((0, 0)), model.score((1, 0))
    torch.testing.assert_close(scores, expected)


def test_full_sort_predict_refuses_rows_short_of_the_top_k():
    model = Toy(beam_size=1, max_topk=2)
    with pytest.raises(RuntimeError, match="fewer than the largest top-K = 2"):
        model.full_sort_predict({"user": torch.tensor([0])})


# A seeded run of each generative model on tiny-mm: untrained weights, codes assigned from the
# untrained tokenizer, the first test users ranked. Values recorded before the models moved onto
# SemanticIdRecommender (and unchanged by the move); a change means other numbers for a seed.
# The options are the shared tiny sizes (recbole_mm/smoke.py, which says these values depend on
# them) with the YAML's graph depth: tiny_config's n_layers, 1, is LightGCN's and GTC's.
GOLDEN = {
    "MMGRec": {
        "options": tiny_settings("MMGRec", n_layers=2),
        "stages": ("generator",),
        "codes": [
            [3, 3, 3],
            [0, 1, 0],
            [0, 1, 6],
            [3, 3, 7],
            [3, 2, 4],
            [3, 3, 9],
            [3, 1, 0],
            [3, 2, 0],
        ],
        "items": [[19, 14, 20, 4, 23], [19, 4, 14, 2, 9], [23, 25, 1, 26, 13]],
        "scores": [
            [-5.6182, -5.7670, -6.2943, -6.3567, -6.4450],
            [-6.0795, -6.5882, -6.6716, -6.7824, -6.9888],
            [-5.7988, -5.9817, -6.0499, -6.0792, -6.1716],
        ],
    },
    "CEMG": {
        "options": tiny_settings("CEMG", n_layers=2),
        "stages": ("tokenizer", "generator"),
        "codes": [[7, 2], [1, 0], [2, 1], [5, 2], [1, 6], [4, 4], [5, 1], [3, 5]],
        "items": [[3, 22, 20, 5, 19], [3, 22, 20, 5, 19], [3, 20, 22, 19, 5]],
        "scores": [
            [-4.8456, -4.9808, -5.1642, -5.3242, -5.4465],
            [-4.7644, -5.3536, -5.3925, -5.5043, -5.5710],
            [-4.6984, -5.0929, -5.1050, -5.2831, -5.4856],
        ],
    },
}


def golden_run(name: str, root) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes of items 1-8, top-5 items and their scores for 3 test users)``."""
    from recbole.utils import init_seed

    init_seed(0, True)  # the split shuffles with the global generators
    config, train, _, test = tiny_splits(root, name, **GOLDEN[name]["options"])
    model = seeded_model(name, config, train, 0)
    for stage in GOLDEN[name]["stages"]:
        model.set_stage(stage)
        model.prepare_stage(stage, train)
    interaction = next(iter(test))[0][:3]
    with torch.no_grad():
        scores = model.eval().full_sort_predict(interaction)
    top, items = scores.topk(5, dim=1)
    return model.item_codes[1:9], items, top


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_seeded_golden_codes_and_scores(tiny_root, name):
    codes, items, scores = golden_run(name, tiny_root)
    golden = GOLDEN[name]
    assert codes.tolist() == golden["codes"]
    assert items.tolist() == golden["items"]
    torch.testing.assert_close(scores, torch.tensor(golden["scores"]), atol=1e-4, rtol=0)
