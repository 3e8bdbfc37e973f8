"""Full-sort evaluation batches are sized in users, not in RecBole's users x items."""

import pytest

from recbole_mm.utils import full_sort_users_per_batch
from tests.conftest import TINY, tiny_config, tiny_splits


def test_users_per_batch_fills_the_score_budget():
    assert full_sort_users_per_batch(10_000, 6_000, max_scores=60_000) == 10
    assert full_sort_users_per_batch(10_000, 6_000, max_scores=5_999) == 1  # never zero users
    assert full_sort_users_per_batch(7, 6_000, max_scores=10**9) == 7  # never more than all


def test_bad_score_budget_names_the_key():
    with pytest.raises(ValueError, match="full_sort_max_scores"):
        full_sort_users_per_batch(10, 10, max_scores=0)


def _without_eval_batch_size(root, model, **overrides):
    config = tiny_config(root, **overrides)
    del config["eval_batch_size"]
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation

    config = Config(model=model, dataset=TINY, config_dict=config)
    return (config, *data_preparation(config, create_dataset(config)))


def test_general_model_batches_count_users(tiny_root):
    # A budget below one user's row of scores: RecBole's rule would give 1 user per batch for
    # any eval_batch_size below n_items; counted in users, the batch holds what the key says.
    config, _, valid, _ = _without_eval_batch_size(tiny_root, "BPR", full_sort_batch_users=3)
    assert valid.step == 3
    assert config["eval_batch_size"] == 3 * valid._dataset.item_num


def test_automatic_size_takes_every_user_of_a_small_dataset(tiny_root):
    config, _, valid, _ = _without_eval_batch_size(tiny_root, "BPR")
    assert valid.step == valid._dataset.user_num


def test_explicit_eval_batch_size_keeps_recbole_meaning(tiny_root):
    config, _, valid, _ = tiny_splits(tiny_root, "BPR", eval_batch_size=1)
    assert config["eval_batch_size"] == 1  # users x items pairs, as RecBole defines it
    assert valid.step == 1
