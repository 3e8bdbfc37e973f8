"""The strict new-item split: a seeded share of items never seen in training.

With ``new_item_ratio: 0.2`` a seeded 20% of the items that occur in the interactions are *new*:
none of their interactions is in the training split, so only content can rank them (the
cold-start protocol of CLCRec-style papers).

- General models (:func:`general_split_labels`): the interactions of new items go to
  validation and test, half each (a seeded coin per interaction); the other interactions are
  split per user at random 8:1:1 (the ratios of ``eval_args.split.RS`` when given).
- Sequential models (:func:`sequential_split_labels`, on RecBole's augmented rows, one row per
  (history, target)): a user's sequence is cut before its first new item. The rows before the
  cut are split leave-one-out (last target to test, the one before to validation, the rest to
  training); the row whose target is the first new item (its history holds warm items only)
  goes to validation or test (a seeded coin per user); every later row is dropped, so a new
  item appears only as a target of validation or test and never in a history. A user whose
  first item is new has no warm history and is dropped.

RecBole's training sampler still draws negatives from every item, new ones included: the
models never see a new item as a positive, but may see it as a negative.

:func:`new_item_data_preparation` is RecBole's ``data_preparation`` with this split in place
of ``dataset.build()``'s; ``recbole_mm.utils.data_preparation`` calls it when
``new_item_ratio`` is set.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

NEW_ITEM_KEY = "new_item_ratio"
TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1


def check_ratio(ratio) -> float:
    """``ratio`` as a float in (0, 1); raise naming the key otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(
            f"{NEW_ITEM_KEY} = {ratio!r} must be a share of items in (0, 1), e.g. 0.2, or ~ "
            f"for RecBole's split."
        )
    return float(ratio)


def choose_new_items(items: np.ndarray, n_items: int, ratio: float, seed: int) -> np.ndarray:
    """``[n_items]`` bool: a seeded ``round(ratio * k)`` of the ``k`` distinct ids in ``items``.

    Args:
        items: item ids of the interactions (RecBole ids, 0 is padding and never chosen).
        n_items: size of the mask (RecBole's ``item_num``).
        ratio: share of the items to make new.
        seed: seed of the choice.
    """
    ratio = check_ratio(ratio)
    present = np.unique(np.asarray(items))
    present = present[present > 0]
    k = int(round(ratio * len(present)))
    if not 0 < k < len(present):
        raise ValueError(
            f"{NEW_ITEM_KEY} = {ratio} makes {k} of {len(present)} items new: choose a ratio "
            f"that leaves some items on each side."
        )
    chosen = np.random.default_rng(seed).choice(present, size=k, replace=False)
    mask = np.zeros(n_items, dtype=bool)
    mask[chosen] = True
    return mask


def _ratio_counts(n: int, ratios) -> list[int]:
    """Sizes of the parts of ``n`` rows split by ``ratios``, rounded as cumulative shares."""
    total = sum(ratios)
    bounds = [int(round(n * sum(ratios[: i + 1]) / total)) for i in range(len(ratios))]
    return [b - a for a, b in zip([0, *bounds[:-1]], bounds)]


def general_split_labels(
    users: np.ndarray, items: np.ndarray, is_new: np.ndarray, *, seed: int, ratios=(0.8, 0.1, 0.1)
) -> np.ndarray:
    """Split label of every interaction: TRAIN, VALID or TEST.

    New items' interactions: VALID or TEST by a seeded coin each. The others: per user, in a
    seeded random order, ``ratios`` (train, valid, test).

    Shapes:
        users, items: ``[N]``; is_new: ``[n_items]`` -> ``[N]`` int labels.
    """
    rng = np.random.default_rng(seed)
    users, items = np.asarray(users), np.asarray(items)
    labels = np.full(len(users), TRAIN, dtype=np.int64)
    new = is_new[items]
    labels[new] = np.where(rng.random(int(new.sum())) < 0.5, VALID, TEST)
    warm = np.flatnonzero(~new)
    order = warm[rng.permutation(len(warm))]
    order = order[np.argsort(users[order], kind="stable")]  # grouped by user, shuffled within
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    for start, end in zip(starts, [*starts[1:], len(order)]):
        n_train, n_valid, _ = _ratio_counts(end - start, ratios)
        labels[order[start + n_train : start + n_train + n_valid]] = VALID
        labels[order[start + n_train + n_valid : end]] = TEST
    return labels


def sequential_split_labels(
    users: np.ndarray,
    targets: np.ndarray,
    first_history_items: np.ndarray,
    is_new: np.ndarray,
    *,
    seed: int,
) -> np.ndarray:
    """Split label of every augmented row (module docstring): TRAIN, VALID, TEST or DROPPED.

    Args:
        users: the user of each row; rows are grouped by user and in time order within a user
            (as RecBole's ``data_augmentation`` leaves them).
        targets: the target item of each row.
        first_history_items: the first item of each row's history (for a user's first row,
            the user's first item).
        is_new: ``[n_items]`` bool.
        seed: seed of the validation/test coin of each user's new-item row.

    Shapes:
        users, targets, first_history_items: ``[R]`` -> ``[R]`` int labels.
    """
    users, targets = np.asarray(users), np.asarray(targets)
    labels = np.full(len(users), DROPPED, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
    coins = np.random.default_rng(seed).random(len(starts)) < 0.5
    for start, end, coin in zip(starts, [*starts[1:], len(users)], coins):
        if is_new[first_history_items[start]]:
            continue  # the first item is new: no warm history
        new_rows = np.flatnonzero(is_new[targets[start:end]])
        cut = start + new_rows[0] if len(new_rows) else end
        warm = np.arange(start, cut)
        labels[warm] = TRAIN
        if len(warm) >= 1:
            labels[warm[-1]] = TEST
        if len(warm) >= 2:
            labels[warm[-2]] = VALID
        if cut < end:
            labels[cut] = VALID if coin else TEST
    return labels


def new_item_split(config, dataset) -> tuple[list, np.ndarray]:
    """The three split datasets of ``dataset`` and the ``[n_items]`` new-item mask.

    Calls ``dataset._change_feat_format()`` first, as RecBole's ``build`` does (a sequential
    dataset augments its rows there).
    """
    ratio = check_ratio(config[NEW_ITEM_KEY])
    if dataset.benchmark_filename_list is not None:
        raise ValueError(
            f"{NEW_ITEM_KEY} = {ratio} cannot re-split a dataset read from benchmark files "
            f"(benchmark_filename = {config['benchmark_filename']}): remove one of the two."
        )
    dataset._change_feat_format()
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].numpy()
    targets = inter[dataset.iid_field].numpy()
    sequential = (dataset.iid_field + config["LIST_SUFFIX"]) in inter
    if sequential:
        history = inter[dataset.iid_field + config["LIST_SUFFIX"]].numpy()
        # Every item of the user, targets and the first row's history (its first item).
        all_items = np.concatenate([targets, history[:, 0]])
        is_new = choose_new_items(all_items, dataset.item_num, ratio, config["seed"])
        labels = sequential_split_labels(users, targets, history[:, 0], is_new, seed=config["seed"])
    else:
        is_new = choose_new_items(targets, dataset.item_num, ratio, config["seed"])
        split = (config["eval_args"] or {}).get("split") or {"RS": [0.8, 0.1, 0.1]}
        if "RS" not in split:
            raise ValueError(
                f"{NEW_ITEM_KEY} = {ratio} splits the other interactions of a general model at "
                f"random by eval_args.split.RS, but eval_args.split = {split}: use RecBole's "
                f"default split (python -m recbole_mm.benchmark --protocol=dataset)."
            )
        ratios = split["RS"]
        labels = general_split_labels(users, targets, is_new, seed=config["seed"], ratios=ratios)
    datasets = [
        dataset.copy(inter[torch.from_numpy(np.flatnonzero(labels == k))]) for k in (0, 1, 2)
    ]
    logger.info(
        "%s = %s: %d new items; %d train / %d valid / %d test rows (%d dropped), of which "
        "%d valid and %d test rows hold a new item.",
        NEW_ITEM_KEY,
        ratio,
        int(is_new.sum()),
        *(len(d) for d in datasets),
        int((labels == DROPPED).sum()),
        int(is_new[targets[labels == VALID]].sum()),
        int(is_new[targets[labels == TEST]].sum()),
    )
    return datasets, is_new


def new_item_data_preparation(config, dataset):
    """RecBole's ``data_preparation`` with :func:`new_item_split` in place of ``build()``.

    Returns:
        ``(train_data, valid_data, test_data)``; each loader's dataset carries the mask as
        ``new_items`` (``[n_items]`` bool tensor).
    """
    from recbole.data.utils import create_samplers, get_dataloader
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        raise ValueError(f"{NEW_ITEM_KEY} is not supported for knowledge-aware models.")
    if config["save_dataloaders"]:
        raise ValueError(f"{NEW_ITEM_KEY} cannot be combined with save_dataloaders.")
    datasets, is_new = new_item_split(config, dataset)
    mask = torch.from_numpy(is_new)
    for split in datasets:
        split.new_items = mask
    samplers = create_samplers(config, dataset, datasets)
    train = get_dataloader(config, "train")(
        config, datasets[0], samplers[0], shuffle=config["shuffle"]
    )
    valid = get_dataloader(config, "valid")(config, datasets[1], samplers[1], shuffle=False)
    test = get_dataloader(config, "test")(config, datasets[2], samplers[2], shuffle=False)
    return train, valid, test
