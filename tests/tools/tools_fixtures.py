"""Tiny raw inputs in the exact published formats, written by the tests themselves.

The Amazon fixture is built so that every filtering rule has work to do: a repeated user-item
pair, an item with 4 interactions whose removal pushes one user below 5 (a second k-core pass),
an item without metadata (so without text), an item without a ``.b`` record (so without an
image), a ``.b`` record of an item outside the data and a repeated ``.b`` record.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
B_DIM = 4096

N_CORE_USERS = 12
CORE_ITEMS = [f"B{i:09d}" for i in range(14)]  # 10-character asins, as on Amazon
WEAK_ITEM = "B999999999"  # 4 interactions: removed in pass 1
WEAK_USER = "AWEAKUSER"  # 5 interactions, one with WEAK_ITEM: removed in pass 2
NO_META_ITEM = CORE_ITEMS[3]
NO_IMAGE_ITEM = CORE_ITEMS[5]
OUTSIDE_ITEM = "B888888888"
# Interactions per core user: n < 10 and n >= 10 both occur; nobody has all 14 items, which
# RecBole's negative sampler would reject.
CORE_COUNTS = [5, 6, 6, 7, 8, 9, 9, 10, 11, 12, 12, 13]


def core_users() -> list[str]:
    return [f"A{u:03d}USER" for u in range(N_CORE_USERS)]


def amazon_interactions() -> list[tuple[str, str, float, int]]:
    """``(reviewerID, asin, overall, unixReviewTime)`` rows, in file order."""
    rows = []
    day = 86_400
    for u, (user, n) in enumerate(zip(core_users(), CORE_COUNTS, strict=True)):
        # A rotation keeps every core item above 5 interactions.
        items = [CORE_ITEMS[(u + j) % len(CORE_ITEMS)] for j in range(n)]
        for j, item in enumerate(items):
            rows.append((user, item, float(1 + (u + j) % 5), 1_400_000_000 + day * (10 * u + j)))
    for u in range(3):  # the weak item: 3 core users + the weak user = 4 interactions
        rows.append((core_users()[8 + u], WEAK_ITEM, 3.0, 1_500_000_000 + u))
    weak_items = [WEAK_ITEM, *CORE_ITEMS[:4]]
    for j, item in enumerate(weak_items):
        rows.append((WEAK_USER, item, 4.0, 1_450_000_000 + day * j))
    # A repeated pair (later in time): the converter keeps the earlier one.
    first = rows[0]
    rows.append((first[0], first[1], 2.5, first[3] + 999 * day))
    return rows


def expected_core() -> dict[str, list[str]]:
    """user -> items after dedup and 5-core, derived independently of the converter."""
    out: dict[str, list[str]] = {}
    for user, n in zip(core_users(), CORE_COUNTS, strict=True):
        u = core_users().index(user)
        out[user] = [CORE_ITEMS[(u + j) % len(CORE_ITEMS)] for j in range(n)]
    return out


def meta_record(asin: str, release: str) -> dict:
    i = int(asin[1:]) % 100
    if release == "2014":
        return {
            "asin": asin,
            "title": f"Soft 'Cotton' Blanket {i}",
            "brand": "Acme",
            "description": f"A warm blanket\nfor babies {i}.",
            "categories": [["Baby", "Nursery", "Bedding"], ["Home", "Kids"]],
            "imUrl": f"http://example.com/{asin}.jpg",
            "price": 9.5,
            "salesRank": {"Baby": 100 + i},
        }
    return {
        "asin": asin,
        "title": f"Racing <b>Game</b> &amp; Wheel {i}",
        "brand": "Acme",
        "description": [f"<p>Fast cars {i}.</p>", "Two players."],
        "feature": ["Wheel included"],
        "category": ["Video Games", "PC"],
        "imageURL": [f"http://example.com/small/{asin}.jpg"],
        "imageURLHighRes": [f"http://example.com/large/{asin}.jpg"],
    }


def b_vector(asin: str) -> np.ndarray:
    seed = int(asin[1:]) % 1000
    return np.random.default_rng(seed).random(B_DIM, dtype=np.float32)


def write_amazon_raw(folder: Path, *, release: str, category: str) -> dict[str, Path]:
    """Write the raw files of one category as the release publishes them; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = amazon_interactions()
    if release == "2014":
        paths = {
            "reviews": folder / f"reviews_{category}_5.json.gz",
            "meta": folder / f"meta_{category}.json.gz",
            "image_features": folder / f"image_features_{category}.b",
        }
    else:
        paths = {
            "reviews": folder / f"{category}_5.json.gz",
            "meta": folder / f"meta_{category}.json.gz",
        }
    with gzip.open(paths["reviews"], "wt", encoding="utf-8") as f:
        for user, item, rating, time in rows:
            review = {
                "reviewerID": user,
                "asin": item,
                "reviewerName": "Jo",
                "helpful": [0, 0],
                "reviewText": "Nice.",
                "overall": rating,
                "summary": "ok",
                "unixReviewTime": time,
                "reviewTime": "01 1, 2014",
            }
            if release == "2018":
                review.update(vote="2", verified=True, style={"Format:": " Hardcover"})
                del review["helpful"]
            f.write(json.dumps(review) + "\n")
    items = [*CORE_ITEMS, WEAK_ITEM]
    with gzip.open(paths["meta"], "wt", encoding="utf-8") as f:
        for asin in items:
            if asin == NO_META_ITEM:
                continue
            record = meta_record(asin, release)
            # 2014 metadata is Python literals (single quotes), 2018 strict JSON.
            f.write((repr(record) if release == "2014" else json.dumps(record)) + "\n")
        # An asin twice: the first record wins.
        duplicate = dict(meta_record(CORE_ITEMS[0], release), title="SECOND COPY")
        f.write((repr(duplicate) if release == "2014" else json.dumps(duplicate)) + "\n")
    if release == "2014":
        records = [(a, b_vector(a)) for a in [OUTSIDE_ITEM, *items] if a != NO_IMAGE_ITEM]
        # A repeated record: the first one wins.
        records.append((CORE_ITEMS[1], np.zeros(B_DIM, np.float32)))
        write_b_file(paths["image_features"], records)
    return paths


def write_b_file(path: Path, records: list[tuple[str, np.ndarray]]) -> Path:
    """Records of 10 ASCII bytes of asin + 4096 little-endian float32, as in the 2014 release."""
    with open(path, "wb") as f:
        for asin, vector in records:
            f.write(asin.encode("ascii").ljust(10, b" "))
            f.write(struct.pack(f"<{B_DIM}f", *vector))
    return path


def fake_text_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for sentence-transformers: 8-d rows from the text's bytes."""
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, text in enumerate(texts):
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.float32)
        out[i] = [len(text), data.sum() % 97, *data[:6].tolist(), *[0.0] * 6][:8]
    return out


def write_mmrec_folder(
    folder: Path,
    *,
    name: str = "baby",
    n_users: int = 9,
    n_items: int = 7,
    labels_override: dict[int, str] | None = None,
    nan_rows: tuple[int, ...] = (),
    feature_rows: int | None = None,
) -> dict:
    """An MMRec dataset folder: ``<name>.inter`` with x_label plus text/image matrices."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    labels = []
    for u in range(n_users):
        items = rng.choice(n_items, size=5, replace=False)
        for j, i in enumerate(items):
            label = 0 if j < 3 else j - 2
            labels.append(label)
            lines.append(f"{u}\t{i}\t{float(1 + j)}\t{1_300_000_000 + 10 * u + j}\t{label}")
    for row, value in (labels_override or {}).items():
        parts = lines[row + 1].split("\t")
        parts[-1] = value
        lines[row + 1] = "\t".join(parts)
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    rows = feature_rows if feature_rows is not None else n_items
    text = rng.normal(size=(rows, 384)).astype(np.float32)
    image = rng.normal(size=(rows, 16)).astype(np.float32)
    for r in nan_rows:
        image[r, 0] = np.nan
    np.save(folder / "text_feat.npy", text)
    np.save(folder / "image_feat.npy", image)
    return {"text": text, "image": image, "lines": lines[1:], "labels": labels}
