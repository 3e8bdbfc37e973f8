"""Import a dataset in MMRec's format into a recbole_mm dataset, keeping its split exactly.

MMRec stores a dataset as a folder with ``<name>.inter`` (tab separated, header
``userID itemID rating timestamp x_label``; ids are integers from 0; ``x_label`` 0/1/2 marks
train/valid/test) and one ``[n_items, d]`` matrix per modality (``text_feat.npy``,
``image_feat.npy``) whose row ``i`` belongs to item id ``i``.

This tool writes into ``<out>/<name>/``:

- ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter``: the rows of x_label 0,
  1, 2, in their original order, columns ``user_id:token item_id:token rating:float
  timestamp:float`` with the MMRec ids written as tokens (``"0"``, ``"1"``, ...);
- ``<name>.<modality>.npy/.tokens`` for each feature matrix, the tokens being the row numbers as
  strings, so each row stays with the item MMRec gave it;
- ``<name>.build.json``: the arguments and the counts.

Use the dataset with a YAML that sets ``benchmark_filename: [train, valid, test]`` (e.g.
``properties/dataset/amazon-baby.yaml`` for MMRec's ``baby``). Usage:
``python -m dataset_tools.mmrec --help``.
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

DEFAULT_FEATURES = {"text": "text_feat.npy", "image": "image_feat.npy"}
USER_FIELD, ITEM_FIELD, LABEL_FIELD = "userID", "itemID", "x_label"


def find_inter_file(folder: str | Path) -> Path:
    """The single ``*.inter`` file of an MMRec dataset folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(
            f"The MMRec dataset folder {folder} does not exist; pass --mmrec-dir with the folder "
            f"holding <name>.inter and the *_feat.npy files."
        )
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise ConversionError(
            f"{folder} must hold exactly one *.inter file to import (found: {listed}); name the "
            f"one to use with --inter-file."
        )
    return found[0]


def read_mmrec_inter(path: str | Path) -> pd.DataFrame:
    """Read an MMRec ``.inter`` file; validate ids and labels.

    Returns:
        columns ``user_id``, ``item_id`` (int), ``rating``, ``timestamp`` (float; 1.0 and 0.0
        when the file has no such column) and ``x_label`` (0/1/2), in file order.
    """
    path = require_file(
        path,
        what="MMRec interaction file",
        fix="Pass --mmrec-dir (and --inter-file) pointing at the MMRec dataset.",
    )
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConversionError(f"{path} is not a tab-separated table: {err}") from err
    missing = [c for c in (USER_FIELD, ITEM_FIELD, LABEL_FIELD) if c not in frame.columns]
    if missing:
        raise ConversionError(
            f"{path} has columns {list(frame.columns)} but lacks {missing}; an MMRec .inter file "
            f"has the tab-separated header userID, itemID, rating, timestamp, x_label."
        )
    if frame.empty:
        raise ConversionError(f"{path} holds no interaction.")
    out = pd.DataFrame()
    for source, target in ((USER_FIELD, "user_id"), (ITEM_FIELD, "item_id")):
        values = pd.to_numeric(frame[source], errors="coerce")
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy()) + 2)[:3].tolist()
            raise ConversionError(
                f"{path}: {source} must be an integer id >= 0; lines {rows} hold "
                f"{frame[source][bad].head(3).tolist()}."
            )
        out[target] = values.astype(np.int64)
    for column, default in (("rating", 1.0), ("timestamp", 0.0)):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                rows = (np.flatnonzero(values.isna().to_numpy()) + 2)[:3].tolist()
                raise ConversionError(f"{path}: {column} is not a number on lines {rows}.")
            out[column] = values.astype(np.float64)
        else:
            out[column] = default
    labels = pd.to_numeric(frame[LABEL_FIELD], errors="coerce")
    bad = ~labels.isin([0, 1, 2])
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2)[:3].tolist()
        raise ConversionError(
            f"{path}: x_label must be 0 (train), 1 (valid) or 2 (test); {int(bad.sum())} rows hold "
            f"other values, e.g. {frame[LABEL_FIELD][bad].head(3).tolist()} on lines {rows}. Fix "
            f"the file (or re-run MMRec's split)."
        )
    out["x_label"] = labels.astype(np.int8)
    return out


def load_mmrec_features(
    path: str | Path, *, modality: str, n_items: int, drop_nan_rows: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MMRec feature matrix and check it covers item ids ``0 .. n_items-1`` (read and
    checked by :mod:`recbole_mm.data.features`).

    Returns:
        ``(row ids kept, float32 [len(row ids), d])``: every row, or with ``drop_nan_rows`` the
        rows without NaN/inf (their items are then filled by ``missing_feature_policy``).
    """
    from recbole_mm.data.features import check_feature_matrix, read_feature_matrix

    with conversion_errors():
        matrix = read_feature_matrix(
            path,
            modality=modality,
            missing_fix="Pass --features with the matrices you have, e.g. --features "
            "text=text_feat.npy, or put the file in the MMRec folder.",
        )
        rows = check_feature_matrix(
            matrix,
            source=str(path),
            modality=modality,
            rows=n_items,
            at_least=True,
            rows_note=(
                f"the interactions use item ids up to {n_items - 1}: row i must belong to MMRec "
                f"item id i. The matrix is of another dataset or truncated."
            ),
            nonfinite_fix="Repair the extraction, or pass --drop-nan-rows to leave those items "
            "without a row (the dataset's missing_feature_policy then fills them).",
            drop_nonfinite=drop_nan_rows,
        )
    if matrix.shape[0] > n_items:
        logger.info(
            "%s has %d rows for %d item ids; the extra rows are kept but unused",
            path,
            matrix.shape[0],
            n_items,
        )
    if len(rows) < matrix.shape[0]:
        logger.info(
            "%s: dropped %d rows with NaN or infinite values", path, matrix.shape[0] - len(rows)
        )
    return rows, matrix[rows].astype(np.float32)


def import_mmrec(
    *,
    mmrec_dir: str | Path,
    out: str | Path,
    name: str,
    inter_file: str | Path | None = None,
    features: dict[str, str | Path] | None = None,
    drop_nan_rows: bool = False,
) -> dict:
    """Convert an MMRec dataset folder; see the module docstring for the files written.

    Args:
        mmrec_dir: the MMRec dataset folder.
        out, name: files go to ``<out>/<name>/<name>.*``.
        inter_file: the ``.inter`` file (default: the only one in ``mmrec_dir``); a relative
            path is taken inside ``mmrec_dir``.
        features: ``{modality: file}`` (relative paths inside ``mmrec_dir``); default
            ``{"text": "text_feat.npy", "image": "image_feat.npy"}``; ``{}`` writes none.
        drop_nan_rows: leave rows with NaN/inf out instead of failing.

    Returns:
        the counts written, also stored in ``<name>.build.json``.
    """
    arguments = dict(locals())
    mmrec_dir = Path(mmrec_dir)
    if inter_file is None:
        inter_path = find_inter_file(mmrec_dir)
    else:
        inter_path = Path(inter_file)
        inter_path = inter_path if inter_path.is_absolute() else mmrec_dir / inter_path
    inter = read_mmrec_inter(inter_path)
    n_items = int(inter["item_id"].max()) + 1
    features = DEFAULT_FEATURES if features is None else features
    matrices = {}
    for modality, file in features.items():
        path = Path(file)
        path = path if path.is_absolute() else mmrec_dir / path
        matrices[modality] = load_mmrec_features(
            path, modality=modality, n_items=n_items, drop_nan_rows=drop_nan_rows
        )

    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    labels = inter["x_label"].to_numpy()
    train_users = set(inter["user_id"][labels == 0])
    sizes = write_benchmark(folder, name, inter, labels)
    report = {
        "users": int(inter["user_id"].nunique()),
        "items": int(inter["item_id"].nunique()),
        "interactions": len(inter),
        "split_sizes": sizes,
        "eval_users_absent_from_train": int(len(set(inter["user_id"][labels > 0]) - train_users)),
        "features": {},
        "files": [str(folder / f"{name}.{phase}.inter") for phase in BENCHMARK_PHASES],
    }
    for modality, (rows, _) in matrices.items():
        covered = int(np.isin(inter["item_id"].unique(), rows).sum())
        report["features"][modality] = {"items_without_row": report["items"] - covered}
    return finish_benchmark_import(
        folder,
        name,
        features={m: ([str(i) for i in rows], matrix) for m, (rows, matrix) in matrices.items()},
        known_modalities=list(DEFAULT_FEATURES),
        report=report,
        tool="dataset_tools.mmrec",
        arguments=arguments,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset_tools.mmrec``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_tools.mmrec",
        description="Import a dataset in MMRec's format (<name>.inter with x_label, "
        "text_feat.npy, image_feat.npy) into a recbole_mm dataset with the same split.",
        epilog="Example: python -m dataset_tools.mmrec --mmrec-dir MMRec/data/baby --out dataset "
        "--name amazon-baby",
    )
    parser.add_argument("--mmrec-dir", type=Path, required=True, help="the MMRec dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="parent folder (RecBole data_path)")
    parser.add_argument("--name", required=True, help="dataset name: files go to <out>/<name>/")
    parser.add_argument(
        "--inter-file", type=Path, help="the .inter file (default: the only one in --mmrec-dir)"
    )
    parser.add_argument(
        "--features",
        type=functools.partial(feature_pair, example="text=text_feat.npy"),
        nargs="*",
        metavar="MODALITY=FILE",
        help="feature matrices to import (default: text=text_feat.npy image=image_feat.npy); "
        "give the flag with no value to import none",
    )
    parser.add_argument(
        "--drop-nan-rows",
        action="store_true",
        help="leave feature rows with NaN/inf out (the missing_feature_policy fills those items)",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dataset_tools.mmrec``."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> None:
        features = None if args.features is None else dict(args.features)
        report = import_mmrec(
            mmrec_dir=args.mmrec_dir,
            out=args.out,
            name=args.name,
            inter_file=args.inter_file,
            features=features,
            drop_nan_rows=args.drop_nan_rows,
        )
        sizes = ", ".join(f"{k} {v}" for k, v in report["split_sizes"].items())
        logger.info(
            "%d users, %d items, %d interactions; %s",
            report["users"],
            report["items"],
            report["interactions"],
            sizes,
        )
        if report["eval_users_absent_from_train"]:
            logger.info(
                "%d valid/test users have no training interaction (kept as MMRec has them)",
                report["eval_users_absent_from_train"],
            )
        for modality, info in report["features"].items():
            logger.info(
                "%s: %d rows of dim %d, %d items without a row",
                modality,
                info["rows"],
                info["dim"],
                info["items_without_row"],
            )
        for file in report["files"]:
            logger.info("wrote %s", file)

    return run_cli(body, argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
