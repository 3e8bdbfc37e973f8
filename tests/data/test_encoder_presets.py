"""Named encoder presets (roberta-base mean pooling, vit-base-patch16-224 CLS) on tiny offline
stand-ins with the same model types: pooling, folder checks, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_vit

from recbole_mm.data.encoders import (
    ENCODER_PRESETS,
    default_text_model_path,
    encode_images,
    encode_images_with_preset,
    encode_texts_with_preset,
    encoder_preset,
)

SENTENCES = ["Star Wars (1977).", "A much longer sentence about a period romance film.", "Toy"]


def save_tiny_roberta(folder: Path) -> Path:
    """A random 8-d RoBERTa with the bundled MiniLM tokenizer: model type 'roberta', offline."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=66,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    return save_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"), size=32, hidden=16)


def test_presets_name_the_papers_checkpoints():
    assert ENCODER_PRESETS["roberta-base"].checkpoint == "FacebookAI/roberta-base"
    assert ENCODER_PRESETS["roberta-base"].pooling == "mean"
    assert ENCODER_PRESETS["vit-base-patch16-224"].checkpoint == "google/vit-base-patch16-224"
    assert ENCODER_PRESETS["vit-base-patch16-224"].pooling == "cls"


def test_roberta_preset_is_the_masked_mean_of_the_last_hidden_states(tiny_roberta):
    from transformers import AutoModel, AutoTokenizer

    out = encode_texts_with_preset(
        SENTENCES, preset="roberta-base", path=tiny_roberta, batch_size=2, show_progress=False
    )
    assert out.shape == (3, 8) and out.dtype == np.float32
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_roberta))
    model = AutoModel.from_pretrained(str(tiny_roberta)).eval()
    for row, text in zip(out, SENTENCES):  # one at a time: no padding at all
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        np.testing.assert_allclose(row, hidden.mean(0).numpy(), atol=1e-5)
        assert not np.allclose(row, hidden[0].numpy(), atol=1e-3)  # not the CLS token
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)  # not normalised


def test_vit_preset_is_the_cls_rule_of_encode_images(tiny_vit, tmp_path):
    from PIL import Image

    paths = []
    for k in range(2):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (40, 30), (80 * k, 100, 200)).save(paths[-1])
    features, mask = encode_images_with_preset(
        paths, preset="vit-base-patch16-224", path=tiny_vit, show_progress=False
    )
    expected, _ = encode_images(paths, model_name_or_path=str(tiny_vit), show_progress=False)
    np.testing.assert_array_equal(features, expected)
    assert features.shape == (2, 16) and mask.all()


def test_preset_errors(tiny_roberta, tiny_vit, tmp_path):
    with pytest.raises(ValueError, match="text encoder preset 'bert' is unknown.*roberta-base"):
        encoder_preset("bert", kind="text", path=tiny_roberta)
    with pytest.raises(ValueError, match="image encoder preset 'roberta-base' is unknown"):
        encoder_preset("roberta-base", kind="image", path=tiny_roberta)
    with pytest.raises(ValueError, match="local folder.*huggingface-cli download FacebookAI"):
        encoder_preset("roberta-base", kind="text", path=tmp_path)
    with pytest.raises(ValueError, match="expects a 'roberta' model.*holds a 'vit' model"):
        encoder_preset("roberta-base", kind="text", path=tiny_vit)
    with pytest.raises(ValueError, match="expects a 'vit' model"):
        encoder_preset("vit-base-patch16-224", kind="image", path=tiny_roberta)
