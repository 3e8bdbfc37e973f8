"""The Amazon converter's named encoders (--text-encoder, --image-encoder) on offline stand-ins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tools_fixtures import write_amazon_raw

from dataset_tools.amazon import build_parser, convert_amazon
from dataset_tools.common import ConversionError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_encoder_presets import save_tiny_roberta  # noqa: E402


@pytest.fixture(scope="module")
def raw_2014(tmp_path_factory):
    return write_amazon_raw(tmp_path_factory.mktemp("raw2014"), release="2014", category="Baby")


def test_text_preset_encodes_with_the_local_checkpoint(raw_2014, tmp_path):
    model = save_tiny_roberta(tmp_path / "roberta")
    report = convert_amazon(
        release="2014",
        reviews=raw_2014["reviews"],
        meta=raw_2014["meta"],
        out=tmp_path,
        name="amazon-baby",
        split="loo",
        text_model=str(model),
        text_preset="roberta-base",
        show_progress=False,
    )
    assert report.text_dim == 8  # the tiny RoBERTa's width, mean-pooled


def test_preset_with_a_wrong_folder_fails_before_reading(raw_2014, tmp_path):
    with pytest.raises(ConversionError, match="--text-encoder roberta-base: .*--text-model"):
        convert_amazon(
            release="2014",
            reviews=raw_2014["reviews"],
            meta=raw_2014["meta"],
            out=tmp_path,
            name="x",
            split="loo",
            text_model=str(tmp_path),
            text_preset="roberta-base",
            show_progress=False,
        )


def test_cli_offers_the_presets_by_name(capsys):
    parser = build_parser()
    args = parser.parse_args(
        ["--release", "2018", "--out", "o", "--name", "n", "--split", "loo"]
        + ["--text-encoder", "roberta-base", "--image-encoder", "vit-base-patch16-224"]
    )
    assert (args.text_encoder, args.image_encoder) == ("roberta-base", "vit-base-patch16-224")
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["--release", "2018", "--out", "o", "--name", "n", "--split", "loo"]
            + ["--text-encoder", "bert-large"]
        )
    assert "invalid choice: 'bert-large'" in capsys.readouterr().err
