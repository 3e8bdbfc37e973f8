"""Pieces shared by the converters: errors, line reading, k-core filtering, the MMRec split, writers.

Interactions travel between these functions as a ``pandas.DataFrame`` with the columns of
:data:`INTER_COLUMNS` (``user_id`` and ``item_id`` raw string tokens, ``rating`` and
``timestamp`` numbers), one row per user-item pair, in the order they were read.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

logger = logging.getLogger("dataset_tools")

INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = ("item_id:token", "title:token_seq")
# The suffixes of RecBole's benchmark files, in the order ``benchmark_filename`` lists them.
BENCHMARK_PHASES = ("train", "valid", "test")

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class ConversionError(ValueError):
    """Input that cannot be converted; the message names the file and how to fix it."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def require_file(path: str | Path, *, what: str, fix: str) -> Path:
    """Return ``path`` as a ``Path`` if it is a file, else raise naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"The {what} is missing: {path} does not exist. {fix}")
    return path


@contextlib.contextmanager
def conversion_errors() -> Iterator[None]:
    """Raise a feature file that ``recbole_mm.data.features`` refuses as a ConversionError,
    the error the tools' command lines report (with the same message)."""
    from recbole_mm.data.features import FeatureError

    try:
        yield
    except FeatureError as err:
        raise ConversionError(str(err)) from err


def iter_lines(
    path: str | Path, *, desc: str, show_progress: bool = True
) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for each non-blank line of a plain or gzip text file."""
    path = Path(path)
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(
                tqdm(handle, desc=desc, unit=" lines", disable=not show_progress), start=1
            ):
                if line.strip():
                    yield number, line
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ConversionError(
            f"{path} cannot be read to the end ({err}); the download is probably incomplete: "
            f"fetch it again (check it with `gzip -t {path}`)."
        ) from err


def clean_text(text: object) -> str:
    """Strip HTML tags and entities and collapse whitespace; non-strings become ``""``."""
    if not isinstance(text, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def parse_lines_error(path: Path, number: int, problem: str, fix: str) -> ConversionError:
    """The error for one bad line: where it is, what is wrong, what to do."""
    return ConversionError(f"{path}, line {number}: {problem}. {fix}")


# --------------------------------------------------------------------------------------------
# Filtering and splitting
# --------------------------------------------------------------------------------------------


def drop_duplicate_pairs(inter: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the earliest interaction of each user-item pair (file order breaks ties)."""
    earliest = inter.sort_values("timestamp", kind="stable")
    kept = earliest.drop_duplicates(["user_id", "item_id"], keep="first").sort_index()
    return kept.reset_index(drop=True), len(inter) - len(kept)


def kcore_filter(inter: pd.DataFrame, *, k: int, source: str) -> tuple[pd.DataFrame, int]:
    """Drop users and items with fewer than ``k`` interactions, repeated until none is left.

    Args:
        inter: interactions, columns :data:`INTER_COLUMNS`.
        k: the minimum number of interactions of every remaining user and item.
        source: the input named in the error raised when nothing survives.

    Returns:
        ``(filtered interactions in their original order, number of passes)``.
    """
    if k < 1:
        raise ConversionError(f"k-core must be at least 1, got {k}.")
    rounds = 0
    while True:
        rounds += 1
        user_count = inter["user_id"].map(inter["user_id"].value_counts())
        item_count = inter["item_id"].map(inter["item_id"].value_counts())
        keep = (user_count >= k) & (item_count >= k)
        if keep.all():
            break
        inter = inter[keep.to_numpy()]
    if inter.empty:
        raise ConversionError(
            f"No interaction of {source} survives {k}-core filtering (every user and item needs "
            f"at least {k} interactions). Lower --k-core, or check that the input is the "
            f"complete file of the category you meant."
        )
    return inter.reset_index(drop=True), rounds


def mmrec_split_sizes(n: int) -> tuple[int, int, int]:
    """Train / valid / test sizes of a user with ``n`` interactions under the MMRec protocol.

    ``n < 10``: ``n-2`` train, 1 valid, 1 test. Otherwise ``vt = int(0.2 n)`` (computed exactly
    as ``n // 5``), ``v = vt // 2``: ``n-vt`` train, ``v`` valid, ``vt-v`` test. A user with
    fewer than 3 interactions cannot have all three parts and raises ``ValueError``.
    """
    if n < 3:
        raise ValueError(f"a user needs at least 3 interactions for the MMRec split, got {n}")
    if n < 10:
        return n - 2, 1, 1
    valid_test = n // 5
    valid = valid_test // 2
    return n - valid_test, valid, valid_test - valid


def mmrec_split(inter: pd.DataFrame, *, seed: int, show_progress: bool = True) -> np.ndarray:
    """Label each interaction 0 (train), 1 (valid), 2 (test) or -1 (dropped), MMRec style.

    Users are visited in sorted token order; each user's interactions, ordered by time (file
    order breaking ties), are shuffled by one ``numpy`` generator seeded with ``seed``, and the
    first :func:`mmrec_split_sizes` go to train, the next to valid, the rest to test. Users with
    fewer than 3 interactions would have no training item; like MMRec's rule that drops
    valid/test users absent from train, they are dropped entirely (label -1).
    """
    rng = np.random.default_rng(seed)
    labels = np.full(len(inter), -1, dtype=np.int8)
    times = inter["timestamp"].to_numpy()
    groups = inter.groupby("user_id", sort=True).indices
    for _user, rows in tqdm(
        groups.items(), desc="split users", unit=" users", disable=not show_progress
    ):
        if len(rows) < 3:
            continue
        rows = rows[np.argsort(times[rows], kind="stable")]
        n_train, n_valid, _ = mmrec_split_sizes(len(rows))
        shuffled = rows[rng.permutation(len(rows))]
        labels[shuffled[:n_train]] = 0
        labels[shuffled[n_train : n_train + n_valid]] = 1
        labels[shuffled[n_train + n_valid :]] = 2
    return labels


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_inter(path: str | Path, inter: pd.DataFrame) -> Path:
    """Write interactions as a RecBole atomic ``.inter`` file (tab separated, typed header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = inter.loc[:, list(INTER_COLUMNS)].copy()
    for column in ("user_id", "item_id"):
        frame[column] = frame[column].astype(str)
        bad = frame[column][frame[column].str.contains(r"[\t\n\r]|^$|^\s|\s$", regex=True)]
        if len(bad):
            raise ConversionError(
                f"{column} tokens {bad.unique()[:3].tolist()} cannot be written to {path}: "
                f"tokens must be non-empty and hold no tab, newline or edge whitespace."
            )
    timestamps = frame["timestamp"].to_numpy(dtype=np.float64)
    if np.isfinite(timestamps).all() and (timestamps == np.round(timestamps)).all():
        frame["timestamp"] = timestamps.astype(np.int64)
    frame.to_csv(path, sep="\t", header=list(INTER_HEADER), index=False, lineterminator="\n")
    return path


def write_benchmark(
    folder: str | Path, name: str, inter: pd.DataFrame, labels: np.ndarray
) -> dict[str, int]:
    """Write ``<name>.{train,valid,test}.inter`` from x_label-style labels; return their sizes.

    Rows keep their order within each file; rows labelled -1 are left out.
    """
    labels = np.asarray(labels)
    if len(labels) != len(inter):
        raise ValueError(f"{len(labels)} labels for {len(inter)} interactions")
    sizes = {}
    for label, phase in enumerate(BENCHMARK_PHASES):
        part = inter[labels == label]
        write_inter(Path(folder) / f"{name}.{phase}.inter", part)
        sizes[phase] = len(part)
    return sizes


def write_item_file(path: str | Path, items: Sequence[str], titles: Sequence[str]) -> Path:
    """Write ``<name>.item`` with ``item_id:token`` and ``title:token_seq``.

    The title is a display copy: tabs, line breaks and double quotes (which RecBole's CSV reader
    would take as field quoting) are removed; the text features use the original text.
    """
    path = Path(path)
    lines = ["\t".join(ITEM_HEADER)]
    for item, title in zip(items, titles, strict=True):
        title = _SPACE.sub(" ", str(title).replace('"', " ")).strip()
        lines.append(f"{item}\t{title}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def remove_stale(paths: Sequence[str | Path]) -> list[Path]:
    """Delete files an earlier run with other options left beside the new ones; return them.

    Keeps one truth per dataset folder: e.g. a ``<name>.inter`` next to new benchmark files
    would otherwise be read by a YAML without ``benchmark_filename``.
    """
    removed = []
    for path in map(Path, paths):
        if path.is_file():
            path.unlink()
            removed.append(path)
            logger.info("removed %s, left by an earlier run with other options", path)
    return removed


def write_build_record(folder: str | Path, name: str, record: dict) -> Path:
    """Write ``<name>.build.json``: the tool, its arguments and the counts it reported."""
    path = Path(folder) / f"{name}.build.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def finish_benchmark_import(
    folder: Path,
    name: str,
    *,
    features: dict[str, tuple[Sequence[str], np.ndarray]],
    known_modalities: Sequence[str],
    report: dict,
    tool: str,
    arguments: dict,
) -> dict:
    """The last steps of an importer that wrote pre-split ``benchmark_filename`` files.

    Writes each modality's feature files (``features``: modality -> (item tokens, matrix)),
    removes what an earlier run left (the unsplit ``<name>.inter`` and the files of known
    modalities not written now), and writes ``<name>.build.json``. Fills ``report["features"]``
    (``rows`` and ``dim``, after any per-modality entries the caller put there) and
    ``report["files"]``; returns ``report``.
    """
    from recbole_mm.data.features import feature_file_names, save_modality

    for modality, (tokens, matrix) in features.items():
        written = save_modality(folder, name, modality, tokens=list(tokens), features=matrix)
        report["features"][modality] = {
            "rows": len(tokens),
            "dim": int(matrix.shape[1]),
            **report["features"].get(modality, {}),
        }
        report["files"] += [str(p) for p in written]
    stale = [folder / f"{name}.inter"]
    for modality in sorted(set(known_modalities) - set(features)):
        stale += [folder / file for file in feature_file_names(name, modality)]
    remove_stale(stale)
    report["files"].append(str(folder / f"{name}.build.json"))
    write_build_record(folder, name, {"tool": tool, "arguments": arguments, "report": report})
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def feature_pair(text: str, *, example: str) -> tuple[str, str]:
    """Parse ``MODALITY=FILE`` (an argparse ``type``; ``example`` shows the form in errors)."""
    modality, sep, file = text.partition("=")
    if not sep or not modality or not file:
        raise argparse.ArgumentTypeError(f"expected MODALITY=FILE, e.g. {example}; got {text!r}")
    return modality, file


def non_negative_int(text: str) -> int:
    """``argparse`` type for an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """``argparse`` type for an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def run_cli(main_body, argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> int:
    """Parse ``argv``, set up logging, run ``main_body(args)``; a ConversionError exits with 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", force=True
    )
    try:
        main_body(args)
    except ConversionError as err:
        parser.exit(2, f"error: {err}\n")
    return 0
