"""The shipped Amazon dataset YAMLs agree with what ``dataset_tools.amazon`` writes."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from tools_fixtures import REPO

from dataset_tools.amazon import build_parser, raw_file_names
from dataset_tools.common import INTER_HEADER
from recbole_mm.data.features import MISSING_POLICIES

DATASETS = REPO / "properties" / "dataset"
# name -> (release, category, split), as the papers use them (see docs/dataset_tools.md).
EXPECTED = {
    "amazon-baby": ("2014", "Baby", "mmrec"),
    "amazon-sports": ("2014", "Sports_and_Outdoors", "mmrec"),
    "amazon-clothing": ("2014", "Clothing_Shoes_and_Jewelry", "mmrec"),
    "amazon-cell": ("2014", "Cell_Phones_and_Accessories", "mmrec"),
    "amazon-beauty": ("2014", "Beauty", "loo"),
    "amazon-toys": ("2018", "Toys_and_Games", "loo"),
    "amazon-games": ("2018", "Video_Games", "loo"),
    "amazon-instruments": ("2018", "Musical_Instruments", "loo"),
    "amazon-food": ("2018", "Grocery_and_Gourmet_Food", "loo"),
}
KEY_LINE = re.compile(r"^\s*[A-Za-z_]+:")


def load(name: str) -> dict:
    return yaml.safe_load((DATASETS / f"{name}.yaml").read_text())


def test_every_expected_file_is_there():
    assert {p.stem for p in DATASETS.glob("amazon-*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_key_has_a_typed_comment(name):
    for number, line in enumerate((DATASETS / f"{name}.yaml").read_text().splitlines(), 1):
        if KEY_LINE.match(line):
            assert re.search(r"# \((str|int|float|bool|list|dict)\) \S", line), (name, number)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build_command_matches_the_protocol(name):
    release, category, split = EXPECTED[name]
    config = load(name)
    words = shlex.split(config["build_command"])
    assert words[:3] == ["python", "-m", "dataset_tools.amazon"]
    args = build_parser().parse_args(words[3:])
    assert (args.release, args.category, args.split, args.name) == (release, category, split, name)
    assert args.k_core == 5 and args.raw_dir is not None and args.out is not None
    assert set(raw_file_names(release, category)) >= {"reviews", "meta"}

    # The features the command writes are the ones declared.
    assert config["modalities"]["text"] == {"dim": 384}
    assert args.text_model is None  # all-MiniLM-L6-v2: 384-d
    if release == "2014":
        assert args.image_dir is None and not args.no_image  # the .b file: 4096-d
        assert config["modalities"]["image"] == {"dim": 4096}
    else:
        assert args.image_model == "google/vit-base-patch16-224"  # ViT-base: 768-d
        assert config["modalities"]["image"] == {"dim": 768}
        assert set(args.drop_items_without) == {"text", "image"}  # IMECD drops incomplete items
    assert config["missing_feature_policy"] in MISSING_POLICIES


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fields_and_protocol(name):
    _, _, split = EXPECTED[name]
    config = load(name)
    fields = [h.split(":")[0] for h in INTER_HEADER]
    assert [
        config[k] for k in ("USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD")
    ] == (fields)
    assert config["field_separator"] == "\t"
    assert set(config["load_col"]["inter"]) <= set(fields)
    assert config["eval_args"]["mode"] == "full"
    assert config["eval_args"]["group_by"] == "user"
    if split == "mmrec":
        assert config["benchmark_filename"] == ["train", "valid", "test"]
        assert config["eval_args"]["order"] == "RO"
        assert config["metrics"] == ["Recall", "NDCG", "Precision", "MAP"]
        assert config["topk"] == [5, 10, 20, 50]
        assert config["valid_metric"] == "Recall@20"
        assert config["stopping_step"] == 20
    else:
        assert "benchmark_filename" not in config
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
        assert config["eval_args"]["order"] == "TO"
        assert config["metrics"] == ["Hit", "NDCG"]
        assert config["topk"] == [5, 10, 20]
        assert config["valid_metric"] == "NDCG@10"
        assert config["MAX_ITEM_LIST_LENGTH"] == 50
