"""Import a dataset in the MMGCN / MMGRec layout (MovieLens, TikTok, Kwai) into recbole_mm.

The MMGCN release (Wei et al., ACM MM 2019) and MMGRec's code keep a dataset as a folder with

- ``user_item_dict.npy``: a pickled ``{user id: items}`` dict (``np.save`` of a dict, read with
  ``allow_pickle``); user ids run from 0, and item ids either from 0 or, as in MMGCN's files,
  from the number of users (``item + n_users``); ``--item-offset auto`` detects which;
- one feature matrix per modality, row ``i`` belonging to item ``i`` (ids without the offset):
  MovieLens ``FeatureVideo_normal.npy`` (visual, 2048-d), ``FeatureAudio_avg_normal.npy``
  (acoustic, 128-d), ``FeatureText_stl_normal.npy`` (textual, 100-d); TikTok and Kwai
  ``feat_v.pt``, ``feat_a.pt``, ``feat_t.pt`` (torch tensors, 128-d each; Kwai has no acoustic).

Neither release ships MMGRec's split (its ``data_load.py`` draws one at random and crashes
before writing it), so this tool draws the paper's protocol (Sec. 5.1): per user, a random 80%
of the items for training, 10% for validation, 10% for test. A user with ``n`` items gets
``round(0.8 n)`` (halves rounded up) training items, ``(n - train) // 2`` validation items and
the rest for test; one ``numpy`` generator seeded with ``--seed`` shuffles each user's items,
users in increasing id order, items in increasing id order before the shuffle.

Written into ``<out>/<name>/``: ``<name>.{train,valid,test}.inter`` (``user_id:token
item_id:token rating:float timestamp:float``, ids as tokens, rating 1, timestamp 0),
``<name>.<modality>.npy/.tokens`` (tokens ``"0"``, ``"1"``, ...) and ``<name>.build.json``.
Usage: ``python -m dataset_tools.mmgcn --help``.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_tools.common import (
    BENCHMARK_PHASES,
    ConversionError,
    conversion_errors,
    feature_pair,
    finish_benchmark_import,
    require_file,
    run_cli,
    write_benchmark,
)

logger = logging.getLogger("dataset_tools")

DICT_FILE = "user_item_dict.npy"
# Feature files of the two published layouts, by modality, first match wins.
KNOWN_FEATURES = {
    "visual": ("FeatureVideo_normal.npy", "feat_v.pt", "feat_v.npy"),
    "acoustic": ("FeatureAudio_avg_normal.npy", "feat_a.pt", "feat_a.npy"),
    "textual": ("FeatureText_stl_normal.npy", "feat_t.pt", "feat_t.npy"),
}


def read_user_item_dict(path: str | Path) -> dict[int, list[int]]:
    """Read a pickled ``{user: items}`` dict; return sorted, de-duplicated integer lists."""
    path = require_file(
        path,
        what="user-to-items dictionary",
        fix="Pass --mmgcn-dir with the folder holding user_item_dict.npy, or --dict-file.",
    )
    try:
        loaded = np.load(path, allow_pickle=True)
    except (ValueError, OSError) as err:
        raise ConversionError(f"{path} is not a numpy file: {err}") from err
    if isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ():
        loaded = loaded.item()
    if not isinstance(loaded, dict) or not loaded:
        raise ConversionError(
            f"{path} must hold a non-empty {{user id: items}} dict saved with np.save, got "
            f"{type(loaded).__name__}."
        )
    out = {}
    for user, items in loaded.items():
        try:
            user_id = int(user)
            item_ids = sorted({int(i) for i in items})
        except (TypeError, ValueError) as err:
            raise ConversionError(
                f"{path}: user {user!r} must map to an iterable of integer item ids ({err})."
            ) from err
        if user_id < 0 or (item_ids and item_ids[0] < 0):
            raise ConversionError(f"{path}: user {user_id} has a negative user or item id.")
        out[user_id] = item_ids
    return out


def resolve_item_offset(user_items: dict[int, list[int]], item_offset: str | int) -> int:
    """The offset to subtract from item ids: ``auto`` takes ``n_users`` when every item id is
    at least ``n_users`` (MMGCN numbering), else 0."""
    smallest = min((items[0] for items in user_items.values() if items), default=0)
    if item_offset == "auto":
        n_users = max(user_items) + 1
        return n_users if smallest >= n_users else 0
    offset = int(item_offset)
    if offset > smallest:
        raise ConversionError(
            f"--item-offset {offset} exceeds the smallest item id {smallest}: item ids would "
            f"become negative. Use --item-offset auto or 0."
        )
    return offset


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train / valid / test sizes of a user with ``n`` items (MMGRec's random 8:1:1)."""
    train = int(np.floor(0.8 * n + 0.5))
    valid = (n - train) // 2
    return train, valid, n - train - valid


def random_split(user_items: dict[int, list[int]], *, seed: int) -> pd.DataFrame:
    """One row per (user, item) with ``x_label`` 0/1/2, users in id order (module docstring)."""
    rng = np.random.default_rng(seed)
    users, items, labels = [], [], []
    for user in sorted(user_items):
        chosen = np.array(user_items[user], dtype=np.int64)
        rng.shuffle(chosen)
        n_train, n_valid, n_test = split_sizes(len(chosen))
        users += [user] * len(chosen)
        items += chosen.tolist()
        labels += [0] * n_train + [1] * n_valid + [2] * n_test
    return pd.DataFrame({"user_id": users, "item_id": items, "x_label": labels})


def load_feature_matrix(path: str | Path, *, modality: str, n_items: int) -> np.ndarray:
    """A ``.npy`` or ``.pt`` ``[rows, d]`` matrix covering item ids ``0 .. n_items-1``, read and
    checked by :mod:`recbole_mm.data.features`."""
    from recbole_mm.data.features import check_feature_matrix, read_feature_matrix

    with conversion_errors():
        matrix = read_feature_matrix(
            path,
            modality=modality,
            missing_fix="Pass --features with the files you have, e.g. --features "
            "textual=feat_t.pt.",
        )
        check_feature_matrix(
            matrix,
            source=str(path),
            modality=modality,
            rows=n_items,
            at_least=True,
            rows_note=(
                f"the dictionary uses item ids up to {n_items - 1} (after the item offset): row i "
                f"must belong to item i. Check --item-offset, or that the matrix belongs to this "
                f"dataset."
            ),
            nonfinite_fix="Repair the extraction, or import the other modalities only "
            "(--features).",
        )
    return matrix.astype(np.float32)


def default_features(folder: Path) -> dict[str, Path]:
    """The known feature files present in ``folder``, by modality."""
    found = {}
    for modality, names in KNOWN_FEATURES.items():
        for name in names:
            if (folder / name).is_file():
                found[modality] = folder / name
                break
    return found


def import_mmgcn(
    *,
    mmgcn_dir: str | Path,
    out: str | Path,
    name: str,
    dict_file: str | Path | None = None,
    features: dict[str, str | Path] | None = None,
    item_offset: str | int = "auto",
    seed: int = 2024,
) -> dict:
    """Convert an MMGCN/MMGRec dataset folder; see the module docstring for the files written.

    Args:
        mmgcn_dir: the dataset folder.
        out, name: files go to ``<out>/<name>/<name>.*``.
        dict_file: the user-to-items dictionary (default ``user_item_dict.npy``; relative paths
            are taken inside ``mmgcn_dir``).
        features: ``{modality: file}`` (relative paths inside ``mmgcn_dir``); default: every
            known file present (:data:`KNOWN_FEATURES`); ``{}`` writes none.
        item_offset: ``"auto"`` or the number subtracted from every item id.
        seed: seed of the random 8:1:1 split.

    Returns:
        the counts written, also stored in ``<name>.build.json``.
    """
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    mmgcn_dir = Path(mmgcn_dir)
    if not mmgcn_dir.is_dir():
        raise ConversionError(
            f"The dataset folder {mmgcn_dir} does not exist; pass --mmgcn-dir with the folder "
            f"holding {DICT_FILE} and the feature files."
        )
    dict_path = Path(dict_file) if dict_file is not None else Path(DICT_FILE)
    dict_path = dict_path if dict_path.is_absolute() else mmgcn_dir / dict_path
    user_items = read_user_item_dict(dict_path)
    offset = resolve_item_offset(user_items, item_offset)
    user_items = {u: [i - offset for i in items] for u, items in user_items.items()}
    n_items = max((items[-1] for items in user_items.values() if items), default=-1) + 1
    if features is None:
        paths = default_features(mmgcn_dir)
        if not paths:
            raise ConversionError(
                f"No known feature file in {mmgcn_dir} (looked for "
                f"{', '.join(n for names in KNOWN_FEATURES.values() for n in names)}); name "
                f"yours with --features MODALITY=FILE, or pass --features alone to import none."
            )
    else:
        paths = {
            m: Path(f) if Path(f).is_absolute() else mmgcn_dir / f for m, f in features.items()
        }
    matrices = {m: load_feature_matrix(p, modality=m, n_items=n_items) for m, p in paths.items()}

    inter = random_split(user_items, seed=seed)
    labels = inter.pop("x_label").to_numpy()
    inter = inter.astype({"user_id": str, "item_id": str})
    inter["rating"], inter["timestamp"] = 1.0, 0.0

    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    sizes = write_benchmark(folder, name, inter, labels)
    report = {
        "users": len(user_items),
        "users_without_items": sum(1 for items in user_items.values() if not items),
        "items": int(inter["item_id"].nunique()),
        "interactions": len(inter),
        "item_offset": offset,
        "split_sizes": sizes,
        "users_without_test_item": int(len(user_items) - inter["user_id"][labels == 2].nunique()),
        "features": {},
        "files": [str(folder / f"{name}.{phase}.inter") for phase in BENCHMARK_PHASES],
    }
    return finish_benchmark_import(
        folder,
        name,
        features={m: ([str(i) for i in range(len(x))], x) for m, x in matrices.items()},
        known_modalities=list(KNOWN_FEATURES),
        report=report,
        tool="dataset_tools.mmgcn",
        arguments=arguments,
    )


def _offset(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset_tools.mmgcn``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_tools.mmgcn",
        description="Import a dataset in the MMGCN/MMGRec layout (user_item_dict.npy + one "
        "feature matrix per modality) into a recbole_mm dataset, split 8:1:1 at random per "
        "user (MMGRec's protocol).",
        epilog="Example: python -m dataset_tools.mmgcn --mmgcn-dir MMGCN/Data/Tiktok --out "
        "dataset --name tiktok",
    )
    parser.add_argument("--mmgcn-dir", type=Path, required=True, help="the dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="parent folder (RecBole data_path)")
    parser.add_argument("--name", required=True, help="dataset name: files go to <out>/<name>/")
    parser.add_argument(
        "--dict-file", type=Path, help=f"the user-to-items dictionary (default {DICT_FILE})"
    )
    parser.add_argument(
        "--features",
        type=functools.partial(feature_pair, example="textual=feat_t.pt"),
        nargs="*",
        metavar="MODALITY=FILE",
        help="feature matrices to import (default: the known MMGCN file names present); give "
        "the flag with no value to import none",
    )
    parser.add_argument(
        "--item-offset",
        type=_offset,
        default="auto",
        help="subtract this from item ids; 'auto' (default) subtracts the number of users when "
        "every item id is at least that (MMGCN's numbering)",
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the 8:1:1 split")
    parser.add_argument("--quiet", action="store_true", help="no summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dataset_tools.mmgcn``."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> None:
        report = import_mmgcn(
            mmgcn_dir=args.mmgcn_dir,
            out=args.out,
            name=args.name,
            dict_file=args.dict_file,
            features=None if args.features is None else dict(args.features),
            item_offset=args.item_offset,
            seed=args.seed,
        )
        sizes = ", ".join(f"{k} {v}" for k, v in report["split_sizes"].items())
        logger.info(
            "%d users, %d items, %d interactions (item offset %d); %s",
            report["users"],
            report["items"],
            report["interactions"],
            report["item_offset"],
            sizes,
        )
        for modality, info in report["features"].items():
            logger.info("%s: %d rows of dim %d", modality, info["rows"], info["dim"])
        for file in report["files"]:
            logger.info("wrote %s", file)

    return run_cli(body, argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
