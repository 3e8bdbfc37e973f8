"""Top-K recommendations from a saved model, with item titles where the dataset has them.

``python -m recbole_mm.recommend --checkpoint=saved/VBPR-....pth --users=196,186 --topk=10``

Works for any checkpoint of recbole_mm's entry points (our models and RecBole's, read with
``torch.load(weights_only=True)``) and, with ``--trusted``, for checkpoints written by RecBole's
own trainers, which pickle their Config (unpickling can run code: trusted files only).

Scores come from RecBole's ``full_sort_scores`` (the model's ``full_sort_predict``, or
``predict`` over all items; a sequential model reads the user's test-time history). Items the
user has interacted with anywhere in the dataset are left out unless ``--include_seen``.
Titles are read from the dataset's ``.item`` atomic file (the first of ``title``,
``movie_title``, ``item_title``, ``name``, or ``--title_field``), whether or not the model loaded
that file.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

TITLE_FIELDS = ("title", "movie_title", "item_title", "name")


def item_titles(config, *, field: str | None = None) -> dict[str, str]:
    """``{item token: title}`` from ``<data_path>/<dataset>/<dataset>.item`` ({} if none)."""
    path = Path(config["data_path"], f"{config['dataset']}.item")
    if not path.is_file():
        path = Path(config["data_path"], config["dataset"], f"{config['dataset']}.item")
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter=config["field_separator"] or "\t", quoting=csv.QUOTE_NONE)
        header = [column.split(":")[0] for column in next(rows)]
        item_field = config["ITEM_ID_FIELD"]
        candidates = [field] if field else [name for name in TITLE_FIELDS if name in header]
        if not candidates or candidates[0] not in header or item_field not in header:
            if field:
                raise ValueError(
                    f"title_field={field!r} is not a column of {path} (columns: {header})"
                )
            return {}
        item_col, title_col = header.index(item_field), header.index(candidates[0])
        return {row[item_col]: row[title_col] for row in rows if len(row) > title_col}


def _user_ids(dataset, users: list[str]) -> np.ndarray:
    uid_field = dataset.uid_field
    known = dataset.field2token_id[uid_field]
    missing = [u for u in users if u not in known]
    if missing:
        examples = ", ".join(list(known)[1:4])
        raise ValueError(
            f"users={','.join(missing)} not in dataset '{dataset.dataset_name}' "
            f"({dataset.user_num - 1} users, e.g. {examples}): give user tokens as they appear "
            f"in the .inter file."
        )
    return np.array([known[u] for u in users])


@torch.no_grad()
def recommend(
    model, dataset, test_data, users: list[str], *, k: int = 10, include_seen: bool = False
) -> dict[str, list[tuple[str, float]]]:
    """``{user token: [(item token, score), ...]}``: the ``k`` best-scored items, best first."""
    from recbole.utils.case_study import full_sort_scores

    uids = _user_ids(dataset, users)
    device = next(model.parameters()).device
    scores = full_sort_scores(uids, model, test_data, device=device).clone()  # [U, n_items]
    if not include_seen:
        inter = dataset.inter_feat
        user_col, item_col = inter[dataset.uid_field], inter[dataset.iid_field]
        for row, uid in enumerate(uids):
            scores[row, item_col[user_col == int(uid)].to(scores.device)] = -torch.inf
    scores[:, 0] = -torch.inf  # padding item
    k = min(k, dataset.item_num - 1)
    top_scores, top_items = torch.topk(scores, k)
    result = {}
    for user, item_row, score_row in zip(users, top_items.cpu(), top_scores.cpu()):
        tokens = dataset.id2token(dataset.iid_field, item_row.numpy())
        result[user] = [
            (str(token), float(score))
            for token, score in zip(tokens, score_row.tolist())
            if score > -torch.inf
        ]
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_mm.recommend",
        description="Print the top-K items a saved model recommends to given users.",
    )
    parser.add_argument("--checkpoint", required=True, help="a .pth file written by a run")
    parser.add_argument("--users", required=True, help="comma-separated user tokens")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--include_seen", action="store_true", help="keep interacted items")
    parser.add_argument("--title_field", default=None, help="column of the .item file")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--trusted",
        action="store_true",
        help="also read RecBole-format checkpoints (pickled Config: trusted files only)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    from recbole_mm.quick_start import load_data_and_model

    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.topk < 1:
        parser.error(f"--topk={args.topk}: give a positive number of items")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint={args.checkpoint} is not a file")
    try:
        config, model, dataset, _, _, test_data = load_data_and_model(
            args.checkpoint, trusted=args.trusted
        )
        users = [u.strip() for u in args.users.split(",") if u.strip()]
        result = recommend(
            model, dataset, test_data, users, k=args.topk, include_seen=args.include_seen
        )
        titles = item_titles(config, field=args.title_field)
    except ValueError as err:
        parser.error(str(err))
    if args.format == "json":
        print(
            json.dumps(
                {
                    user: [
                        {"rank": r, "item": item, "score": score, "title": titles.get(item)}
                        for r, (item, score) in enumerate(items, start=1)
                    ]
                    for user, items in result.items()
                },
                indent=2,
            )
        )
        return result
    print(f"{config['model']} on {config['dataset']}: top {args.topk}")
    for user, items in result.items():
        print(f"user {user}")
        for rank, (item, score) in enumerate(items, start=1):
            title = f"  {titles[item]}" if item in titles else ""
            print(f"  {rank:>3}. item {item:<10} score {score:.4f}{title}")
    return result


if __name__ == "__main__":
    main()
