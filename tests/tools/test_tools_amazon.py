"""The Amazon converter on tiny files in the published 2014 and 2018 formats."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from conftest import save_tiny_vit
from tools_fixtures import (
    CORE_ITEMS,
    NO_IMAGE_ITEM,
    NO_META_ITEM,
    WEAK_ITEM,
    b_vector,
    expected_core,
    fake_text_encoder,
    meta_record,
    write_amazon_raw,
    write_b_file,
)

from dataset_tools.amazon import (
    ConversionReport,
    ImageSource,
    convert_amazon,
    drop_items_lacking,
    filter_core,
    item_sentence,
    read_image_features_b,
    read_interactions_and_meta,
    read_meta,
    read_reviews,
    write_atomic_files,
    write_image_features,
)
from dataset_tools.common import ConversionError, mmrec_split_sizes
from recbole_mm.data.features import ModalitySpec, load_modality


@pytest.fixture(scope="module")
def raw_2014(tmp_path_factory):
    return write_amazon_raw(tmp_path_factory.mktemp("raw2014"), release="2014", category="Baby")


@pytest.fixture(scope="module")
def raw_2018(tmp_path_factory):
    return write_amazon_raw(
        tmp_path_factory.mktemp("raw2018"), release="2018", category="Video_Games"
    )


def read_inter(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})


@pytest.fixture(scope="module")
def baby_mmrec(raw_2014, tmp_path_factory):
    """Baby 2014 with the MMRec split and the real default text encoder (all-MiniLM-L6-v2)."""
    out = tmp_path_factory.mktemp("out")
    report = convert_amazon(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        image_features=raw_2014["image_features"],
        out=out,
        name="amazon-baby",
        split="mmrec",
        seed=11,
        show_progress=False,
    )
    return out / "amazon-baby", report


def test_mmrec_files_and_counts(baby_mmrec):
    folder, report = baby_mmrec
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "amazon-baby.build.json",
        "amazon-baby.image.npy",
        "amazon-baby.image.tokens",
        "amazon-baby.item",
        "amazon-baby.test.inter",
        "amazon-baby.text.npy",
        "amazon-baby.text.tokens",
        "amazon-baby.train.inter",
        "amazon-baby.valid.inter",
    ]
    core = expected_core()
    assert report.duplicates_removed == 1
    assert report.kcore_rounds == 3  # weak item, then weak user, then stable
    assert (report.users, report.items) == (len(core), len(CORE_ITEMS))
    assert report.interactions == sum(len(v) for v in core.values())
    assert report.items_without_meta == 1
    assert report.items_without_text == 1
    assert report.items_without_image == 1
    record = json.loads((folder / "amazon-baby.build.json").read_text())
    assert record["arguments"]["split"] == "mmrec"
    assert record["report"]["split_sizes"] == report.split_sizes


def test_mmrec_split_sizes_per_user(baby_mmrec):
    folder, report = baby_mmrec
    parts = {p: read_inter(folder / f"amazon-baby.{p}.inter") for p in ("train", "valid", "test")}
    core = expected_core()
    for user, items in core.items():
        sizes = tuple(int((parts[p]["user_id:token"] == user).sum()) for p in parts)
        assert sizes == mmrec_split_sizes(len(items)), user
        together = pd.concat([parts[p][parts[p]["user_id:token"] == user] for p in parts])
        assert sorted(together["item_id:token"]) == sorted(items)
    assert report.split_sizes == {p: len(parts[p]) for p in parts}
    # The earlier of the two repeated reviews survives.
    first_user = next(iter(core))
    both = pd.concat(parts.values())
    pair = both[(both["user_id:token"] == first_user) & (both["item_id:token"] == CORE_ITEMS[0])]
    assert pair["rating:float"].tolist() == [1.0 + 0]  # rating of the first review (u=0, j=0)
    assert pair["timestamp:float"].tolist() == [1_400_000_000]


def test_mmrec_split_is_reproducible(raw_2014, baby_mmrec, tmp_path):
    folder, _ = baby_mmrec
    convert_amazon(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        out=tmp_path,
        name="amazon-baby",
        split="mmrec",
        seed=11,
        text=False,
        show_progress=False,
    )
    for part in ("train", "valid", "test"):
        name = f"amazon-baby.{part}.inter"
        assert (tmp_path / "amazon-baby" / name).read_text() == (folder / name).read_text()


def test_text_features(baby_mmrec):
    folder, _ = baby_mmrec
    tokens, features = load_modality(
        ModalitySpec.from_config("text", {"dim": 384}, folder=folder, dataset="amazon-baby")
    )
    assert tokens == [a for a in CORE_ITEMS if a != NO_META_ITEM]
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_image_features_come_from_the_b_file(baby_mmrec):
    folder, _ = baby_mmrec
    tokens, features = load_modality(
        ModalitySpec.from_config("image", {"dim": 4096}, folder=folder, dataset="amazon-baby")
    )
    assert tokens == [a for a in CORE_ITEMS if a != NO_IMAGE_ITEM]
    for token, row in zip(tokens, features, strict=True):
        np.testing.assert_array_equal(row, b_vector(token))  # the repeated record is ignored


def test_item_file_keeps_the_first_meta_record(baby_mmrec):
    folder, _ = baby_mmrec
    lines = (folder / "amazon-baby.item").read_text().splitlines()
    assert lines[0] == "item_id:token\ttitle:token_seq"
    assert lines[1] == f"{CORE_ITEMS[0]}\tSoft 'Cotton' Blanket 0"
    assert len(lines) == 1 + len(CORE_ITEMS)


def test_loo_writes_one_sorted_inter_and_removes_stale_split_files(raw_2014, tmp_path):
    common = dict(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        out=tmp_path,
        name="amazon-beauty",
        show_progress=False,
        text_encoder=fake_text_encoder,
    )
    convert_amazon(split="mmrec", image_features=raw_2014["image_features"], **common)
    convert_amazon(split="loo", **common)
    folder = tmp_path / "amazon-beauty"
    assert not list(folder.glob("*.train.inter"))
    assert not list(folder.glob("*.image.*"))  # this run had no image source
    inter = read_inter(folder / "amazon-beauty.inter")
    assert list(inter.columns) == [
        "user_id:token",
        "item_id:token",
        "rating:float",
        "timestamp:float",
    ]
    ordered = inter.sort_values(["user_id:token", "timestamp:float"], kind="stable")
    assert inter.index.equals(ordered.index)
    assert len(inter) == sum(len(v) for v in expected_core().values())


def test_each_stage_runs_alone(raw_2014, tmp_path):
    report = ConversionReport()
    inter, records = read_interactions_and_meta(
        raw_2014["reviews"], raw_2014["meta"], release="2014", report=report, show_progress=False
    )
    assert (report.duplicates_removed, report.items_without_meta) == (1, 1)
    assert NO_META_ITEM not in records and len(inter) == report.interactions_read - 1
    fewer = drop_items_lacking(
        inter, without_text={NO_META_ITEM}, without_image=None, report=report
    )
    assert report.items_dropped == {"text": 1} and NO_META_ITEM not in set(fewer["item_id"])

    core, items = filter_core(inter, k=5, source="reviews", report=report)
    assert items == CORE_ITEMS and report.kcore_rounds == 3
    assert list(core.groupby("user_id", sort=True)["item_id"].apply(sorted)) == [
        sorted(v) for _, v in sorted(expected_core().items())
    ]
    written, stale = write_atomic_files(
        tmp_path, "b", core, items, records, split="loo", seed=0, report=report, show_progress=False
    )
    assert written == [tmp_path / "b.inter", tmp_path / "b.item"]
    assert stale == [tmp_path / f"b.{phase}.inter" for phase in ("train", "valid", "test")]

    rows = ImageSource(features_file=raw_2014["image_features"]).rows(items, show_progress=False)
    write_image_features(tmp_path, "b", items, rows, source="the .b file", report=report)
    tokens, _ = load_modality(ModalitySpec.from_config("image", {}, folder=tmp_path, dataset="b"))
    assert tokens == [a for a in CORE_ITEMS if a != NO_IMAGE_ITEM]
    with pytest.raises(ConversionError, match="None of the 2 items has an image feature in x"):
        write_image_features(tmp_path, "b", ["y", "z"], rows, source="x", report=report)


def test_sentence_template_2014_and_2018():
    assert item_sentence(meta_record("B000000001", "2014")) == (
        "Soft 'Cotton' Blanket 1 Acme Baby Nursery Bedding A warm blanket for babies 1."
    )
    record = meta_record("B000000001", "2018")
    assert (
        item_sentence(record)
        == "Racing Game & Wheel 1 Acme Video Games PC Fast cars 1. Two players."
    )
    assert item_sentence(record, fields=("title", "brand", "categories")) == (
        "Racing Game & Wheel 1 Acme Video Games PC"
    )
    assert item_sentence(record, fields=("feature",)) == "Wheel included"
    assert item_sentence({"asin": "x"}) == ""
    assert item_sentence(None) == ""


def test_2018_with_images_drops_items_lacking_them(raw_2018, tmp_path, tiny_vit):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for k, asin in enumerate([*CORE_ITEMS, WEAK_ITEM]):
        if asin == CORE_ITEMS[7]:
            (images / f"{asin}.jpg").write_bytes(b"not an image")  # unreadable
        elif asin != CORE_ITEMS[9]:  # CORE_ITEMS[9] has no file
            Image.new("RGB", (40, 30), (10 * k, 100, 200)).save(images / f"{asin}.png")
    seen = []

    def text_encoder(texts):
        seen.extend(texts)
        return fake_text_encoder(texts)

    report = convert_amazon(
        release="2018",
        reviews=raw_2018["reviews"],
        meta=raw_2018["meta"],
        image_dir=images,
        image_model=str(tiny_vit),
        drop_items_without=("text", "image"),
        text_fields=("title", "brand", "categories"),
        image_urls=tmp_path / "urls.tsv",
        out=tmp_path,
        name="amazon-games",
        split="loo",
        show_progress=False,
        text_encoder=text_encoder,
    )
    assert report.items_dropped == {"text": 1, "image": 2}
    folder = tmp_path / "amazon-games"
    items = set(read_inter(folder / "amazon-games.inter")["item_id:token"])
    assert not items & {NO_META_ITEM, CORE_ITEMS[7], CORE_ITEMS[9]}
    image_tokens = (folder / "amazon-games.image.tokens").read_text().split()
    text_tokens = (folder / "amazon-games.text.tokens").read_text().split()
    assert sorted(image_tokens) == sorted(text_tokens) == sorted(items)
    assert report.items_without_image == 0 and report.image_dim == 16
    assert all("<" not in t and "&amp;" not in t for t in seen)
    assert "Racing Game & Wheel 0 Acme Video Games PC" in seen
    urls = dict(line.split("\t") for line in (tmp_path / "urls.tsv").read_text().splitlines())
    assert urls[CORE_ITEMS[0]] == f"http://example.com/large/{CORE_ITEMS[0]}.jpg"


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A randomly initialised 16-d ViT saved locally: encode_images runs without a download."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"), size=32, hidden=16)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_review_file(tmp_path):
    with pytest.raises(ConversionError, match=r"review file is missing: .*nope\.json\.gz"):
        read_reviews(tmp_path / "nope.json.gz")


def test_malformed_review_line_names_file_and_line(tmp_path):
    path = tmp_path / "reviews_X_5.json.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": 1}))
        f.write("\n{'reviewerID': 'u'\n")
    with pytest.raises(ConversionError, match=r"reviews_X_5\.json\.gz, line 2: not a JSON"):
        read_reviews(path, show_progress=False)


def test_review_without_required_key(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"reviewerID": "u", "asin": "a", "overall": 5}) + "\n")
    with pytest.raises(ConversionError, match=r"line 1: the review lacks \['unixReviewTime'\]"):
        read_reviews(path, show_progress=False)


def test_truncated_gzip(raw_2014, tmp_path):
    path = tmp_path / "cut.json.gz"
    path.write_bytes(raw_2014["reviews"].read_bytes()[:-20])
    with pytest.raises(ConversionError, match="download is probably incomplete"):
        read_reviews(path, show_progress=False)


def test_malformed_meta_line(tmp_path):
    path = tmp_path / "meta_X.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("{'asin': 'B1', 'title': 'ok'}\n{'title': 'no asin'}\n")
    with pytest.raises(ConversionError, match=r"line 2: not a metadata record.*--release"):
        read_meta(path, release="2014", show_progress=False)


def test_meta_of_another_category(raw_2014, raw_2018, tmp_path):
    other = tmp_path / "meta_Other.json"
    other.write_text(json.dumps({"asin": "Z000000000", "title": "x"}) + "\n")
    with pytest.raises(ConversionError, match="different categories or releases"):
        convert_amazon(
            release="2014",
            reviews=raw_2014["reviews"],
            meta=other,
            out=tmp_path,
            name="x",
            split="loo",
            text=False,
            show_progress=False,
        )


def test_truncated_b_file(tmp_path):
    path = write_b_file(tmp_path / "image_features_X.b", [("B000000001", b_vector("B000000001"))])
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ConversionError, match="not a whole number of 16394-byte records"):
        read_image_features_b(path, show_progress=False)


def test_kcore_too_strict(raw_2014, tmp_path):
    with pytest.raises(ConversionError, match="survives 50-core.*--k-core"):
        convert_amazon(
            release="2014",
            reviews=raw_2014["reviews"],
            meta=raw_2014["meta"],
            out=tmp_path,
            name="x",
            split="loo",
            k_core=50,
            text=False,
            show_progress=False,
        )


def test_image_dir_needs_a_model(raw_2018, tmp_path):
    with pytest.raises(ConversionError, match="--image-dir needs --image-model"):
        convert_amazon(
            release="2018",
            reviews=raw_2018["reviews"],
            meta=raw_2018["meta"],
            image_dir=tmp_path,
            out=tmp_path,
            name="x",
            split="loo",
            show_progress=False,
        )
