"""Content encoders: the bundled text model and a tiny random vision model, all offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_vit

from recbole_mm.data.encoders import default_text_model_path, encode_images, encode_texts

SENTENCES = [
    "Star Wars (1977). Genres: Action, Adventure, Sci-Fi.",
    "The Empire Strikes Back (1980). Genres: Action, Adventure, Sci-Fi.",
    "Sense and Sensibility (1995). Genres: Drama, Romance.",
]


# ---------------------------------------------------------------------------------------------
# texts


def test_default_text_model_is_normalised_384d_and_deterministic():
    first = encode_texts(SENTENCES, show_progress=False)
    second = encode_texts(SENTENCES, show_progress=False)
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert first.tobytes() == second.tobytes()


def test_text_embeddings_carry_meaning():
    x = encode_texts(SENTENCES, show_progress=False)
    # A sequel is closer to its film than a period romance is: fails for a broken pooling or model.
    assert x[0] @ x[1] > x[0] @ x[2] + 0.1


def test_explicit_model_path_is_used_as_given():
    default = encode_texts(SENTENCES[:2], show_progress=False)
    explicit = encode_texts(
        SENTENCES[:2], model_name_or_path=str(default_text_model_path()), show_progress=False
    )
    np.testing.assert_allclose(default, explicit, atol=1e-6)


def test_batching_does_not_change_text_embeddings():
    one = encode_texts(SENTENCES, batch_size=1, show_progress=False)
    all_ = encode_texts(SENTENCES, batch_size=64, show_progress=False)
    np.testing.assert_allclose(one, all_, atol=1e-5)


def test_empty_and_bad_text_input():
    assert encode_texts([], show_progress=False).shape == (0, 384)
    with pytest.raises(TypeError, match="strings"):
        encode_texts(["fine", None], show_progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        encode_texts(["fine"], batch_size=0, show_progress=False)


# ---------------------------------------------------------------------------------------------
# images


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """A randomly initialised 8-d ViT and its processor, saved like a hub checkpoint."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {}
    for name, mode in (("red", "RGB"), ("noise", "RGB"), ("grey", "L"), ("alpha", "RGBA")):
        shape = (20, 24, 4) if mode == "RGBA" else (20, 24, 3) if mode == "RGB" else (20, 24)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if name == "red":
            pixels[..., 0], pixels[..., 1:] = 255, 0
        paths[name] = folder / f"{name}.png"
        Image.fromarray(pixels, mode=mode).save(paths[name])
    paths["corrupt"] = folder / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    paths["truncated"] = folder / "truncated.png"
    paths["truncated"].write_bytes(paths["noise"].read_bytes()[:60])
    return paths


def test_image_features_shape_mask_and_zero_rows(tiny_vit, images):
    paths = [
        images["red"],
        None,
        images["corrupt"],
        str(images["noise"]),
        images["grey"].parent / "absent.png",
        images["truncated"],
        images["alpha"],
        images["grey"],
    ]
    features, mask = encode_images(paths, model_name_or_path=str(tiny_vit), show_progress=False)
    assert features.shape == (8, 8) and features.dtype == np.float32
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, False, True, False, False, True, True]
    assert not features[~mask].any()
    assert np.abs(features[mask]).sum(axis=1).min() > 0
    assert not np.allclose(features[0], features[3])  # different images, different features


def test_image_features_are_the_cls_token_and_independent_of_batching(tiny_vit, images):
    from PIL import Image
    from transformers import AutoImageProcessor, ViTModel

    paths = [images["red"], images["noise"], images["grey"]]
    one, _ = encode_images(
        paths, model_name_or_path=str(tiny_vit), batch_size=1, show_progress=False
    )
    all_, _ = encode_images(paths, model_name_or_path=str(tiny_vit), show_progress=False)
    again, _ = encode_images(paths, model_name_or_path=str(tiny_vit), show_progress=False)
    np.testing.assert_allclose(one, all_, atol=1e-6)
    assert all_.tobytes() == again.tobytes()

    model = ViTModel.from_pretrained(tiny_vit).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_vit)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(all_, expected, atol=1e-6)


def test_classification_checkpoint_without_pooler_gives_reproducible_features(tmp_path, images):
    # Like google/vit-base-patch16-224: no pooler weights in the checkpoint. A feature read
    # from a pooler would come from random weights that differ at every load.
    save_tiny_vit(tmp_path, num_labels=3)
    paths = [images["red"], images["noise"]]
    torch.manual_seed(1)
    first, _ = encode_images(paths, model_name_or_path=str(tmp_path), show_progress=False)
    torch.manual_seed(2)
    second, _ = encode_images(paths, model_name_or_path=str(tmp_path), show_progress=False)
    assert first.tobytes() == second.tobytes()


def test_image_models_with_a_projection_use_it(tmp_path, images):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config={
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 32,
            "max_position_embeddings": 8,
        },
        vision_config={
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=6,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16).save_pretrained(tmp_path)
    features, mask = encode_images(
        [images["red"], None], model_name_or_path=str(tmp_path), show_progress=False
    )
    assert features.shape == (2, 6) and mask.tolist() == [True, False]


def test_no_readable_image_is_an_error(tiny_vit, images):
    with pytest.raises(ValueError, match="None of the 2 images"):
        encode_images(
            [None, images["corrupt"]], model_name_or_path=str(tiny_vit), show_progress=False
        )
    with pytest.raises(ValueError, match="no image paths"):
        encode_images([], model_name_or_path=str(tiny_vit), show_progress=False)
