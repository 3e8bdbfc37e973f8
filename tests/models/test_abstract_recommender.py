"""The multimodal base classes: role resolution, the feature bank, the dataset's cached graph,
and what every model gets from them on the tiny dataset and on the shipped ml-100k-mm YAML."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import seeded_model, tiny_splits

from recbole_mm.config import Config
from recbole_mm.data.adjacency import mean_adjacency, normalized_adjacency
from recbole_mm.data.modalities import default_modality_roles, resolve_modality_roles, role_tags
from recbole_mm.model.abstract_recommender import FeatureBank
from recbole_mm.smoke import tiny_settings
from recbole_mm.utils import recbole_mm_models

FIXED = ("visual", "textual")


def _resolve(requested, roles=None, modalities=("text", "kg"), tags=None):
    return resolve_modality_roles(
        requested, roles=roles, modalities=modalities, tags=tags or {}, dataset="D", model="M"
    )


def test_free_roles():
    assert _resolve(None) == ({"text": "text", "kg": "kg"}, [])
    assert _resolve({}) == ({}, [])
    assert _resolve({"b": "kg", "a": "text", "c": None}) == ({"b": "kg", "a": "text"}, [])


def test_fixed_roles_take_the_tagged_then_the_usual_modality():
    # kg is tagged visual; text is textual by its usual name; the model's role order wins.
    assert _resolve(None, FIXED, tags={"kg": "visual"}) == (
        {"visual": "kg", "textual": "text"},
        [],
    )
    assert _resolve(None, FIXED, modalities=("text", "image")) == (
        {"visual": "image", "textual": "text"},
        [],
    )
    assert _resolve(None, FIXED) == ({"textual": "text"}, ["visual"])
    # a mapping names exactly the roles used, in the model's role order
    assert _resolve({"textual": "kg", "visual": "text"}, FIXED) == (
        {"visual": "text", "textual": "kg"},
        [],
    )
    assert _resolve({"textual": "text"}, FIXED) == ({"textual": "text"}, [])
    assert default_modality_roles(None, ["a"], tags={"a": "visual"}) == {"a": "a"}


@pytest.mark.parametrize(
    ("requested", "roles", "message"),
    [
        ({"visual": "photo"}, FIXED, r"modality_roles\['visual'\] = 'photo'.*\['text', 'kg'\]"),
        ({"text": "photo"}, None, r"modality_roles\['text'\] = 'photo', but dataset 'D'"),
        ({"image": "kg"}, FIXED, r"names the role 'image', which M does not have.*'textual'"),
        (["text"], None, r"modality_roles = \['text'\] must map M's content roles"),
    ],
)
def test_errors_name_key_role_modality_and_dataset(requested, roles, message):
    with pytest.raises(ValueError, match=message):
        _resolve(requested, roles)


def test_role_tags_read_the_modalities_declaration():
    declared = {"text": {"dim": 8}, "kg": {"dim": 4, "role": "visual"}, "x": None}
    assert role_tags(declared) == {"kg": "visual"}
    assert role_tags(None) == {}


def test_feature_bank_is_data_that_moves_but_is_not_saved():
    bank = FeatureBank({"a": torch.ones(3, 2), "b": torch.zeros(3, 1)})
    assert list(bank) == ["a", "b"] and len(bank) == 2 and "a" in bank and bank.width == 3
    assert bank.state_dict() == {}
    bank = bank.double()
    assert bank["a"].dtype == torch.float64
    bank["a"] = torch.full((3, 2), 2.0)
    assert list(bank) == ["a", "b"]
    torch.testing.assert_close(
        bank.concatenated(torch.tensor([2])), torch.tensor([[2.0, 2.0, 0.0]], dtype=torch.float64)
    )
    assert bank.concatenated().shape == (3, 3)
    with pytest.raises(KeyError, match="no content role 'c'"):
        bank["c"]
    assert not FeatureBank({})


@pytest.fixture(scope="module")
def gtc(tiny_root):
    config, train, _, _ = tiny_splits(tiny_root, "GTC", diffusion_steps=4)
    return config, train


def test_the_graph_comes_from_the_dataset_once_per_split(gtc):
    config, train = gtc
    dataset = train._dataset
    users, items = dataset.interaction_pairs()
    sym = dataset.normalized_adjacency()
    assert dataset.normalized_adjacency("symmetric") is sym  # built once
    expected = normalized_adjacency(
        users, items, n_users=dataset.user_num, n_items=dataset.item_num
    )
    torch.testing.assert_close(sym.to_dense(), expected.to_dense())
    mean = mean_adjacency(users, items, n_users=dataset.user_num, n_items=dataset.item_num)
    torch.testing.assert_close(dataset.normalized_adjacency("mean").to_dense(), mean.to_dense())
    # a split of this split builds its own graph
    half = dataset.copy(dataset.inter_feat[: len(dataset.inter_feat) // 2])
    assert half.normalized_adjacency() is not sym
    assert half.normalized_adjacency()._nnz() < sym._nnz()
    with pytest.raises(ValueError, match="norm = 'laplacian'"):
        dataset.normalized_adjacency("laplacian")
    model = seeded_model("GTC", config, train)
    assert model.adjacency is sym
    assert not any(key.startswith(("features", "adjacency")) for key in model.state_dict())


def test_sequential_graph_joins_users_to_their_history(tiny_root):
    _, train, _, _ = tiny_splits(tiny_root, "CEMG")
    dataset = train._dataset
    users, items = dataset.interaction_pairs()
    targets = set(
        zip(dataset.inter_feat["user_id"].tolist(), dataset.inter_feat["item_id"].tolist())
    )
    pairs = set(zip(users.tolist(), items.tolist()))
    assert targets < pairs  # the history items add edges beyond the targets
    assert len(pairs) == len(users)  # unique pairs


# The models that transform their features once built (the others must keep them as loaded).
TRANSFORM_FEATURES = {"CEMG": "PCA to d (Sec. 3.2)"}


def test_every_model_takes_its_features_from_the_base(tiny_root):
    for name in sorted(recbole_mm_models()):
        config, train, _, _ = tiny_splits(tiny_root, name, **tiny_settings(name))
        model = seeded_model(name, config, train)
        dataset = train._dataset
        # TIGER reads one content modality (its paper's text); the others all of tiny-mm's.
        expected = {"text"} if name == "TIGER" else {"text", "image"}
        assert set(model.modality_roles.values()) == expected, name
        if name not in TRANSFORM_FEATURES:
            for role, modality in model.modality_roles.items():
                assert torch.equal(model.features[role], dataset.modality_features(modality))


def test_declared_width_is_checked_against_the_features(gtc):
    config, train = gtc
    config["modalities"] = {"text": {"dim": 9}, "image": {"dim": 6}}
    try:
        with pytest.raises(ValueError, match=r"modalities.text.dim = 9 but the 'text' features"):
            seeded_model("GTC", config, train)
    finally:
        config["modalities"] = {"text": {"dim": 8}, "image": {"dim": 6}}


def test_a_missing_fixed_role_warns_or_fails(tiny_root, caplog):
    only_text = {"modalities": {"text": {"dim": 8}}}
    config, train, _, _ = tiny_splits(tiny_root, "IMECD", **only_text)
    with caplog.at_level(logging.WARNING, logger="recbole_mm"):
        model = seeded_model("IMECD", config, train)
    assert model.branches == ("id", "text")
    assert "plays the role(s) ['visual']; those branches are off" in caplog.text
    config, train, _, _ = tiny_splits(tiny_root, "CEMG", **tiny_settings("CEMG"), **only_text)
    with pytest.raises(ValueError, match=r"CEMG: no modality of dataset 'tiny-mm' \(\['text'\]\)"):
        seeded_model("CEMG", config, train)
    config, train, _, _ = tiny_splits(tiny_root, "VBPR", modality_roles={})
    with pytest.raises(ValueError, match="VBPR needs at least one content modality"):
        seeded_model("VBPR", config, train)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("GTC", {"text": "text", "kg": "kg"}),
        ("MMGRec", {"text": "text", "kg": "kg"}),
        ("VBPR", {"text": "text", "kg": "kg"}),
        ("IMECD", {"textual": "text", "visual": "kg"}),
        ("CEMG", {"visual": "kg", "textual": "text"}),
        ("TIGER", {"textual": "text"}),
    ],
)
def test_defaults_on_the_shipped_ml_100k_mm(model, expected):
    config = Config(model=model, dataset="ml-100k-mm", config_dict={"use_gpu": False})
    assert config["modality_roles"] is None
    declared = config["modalities"]
    roles = recbole_mm_models()[model].content_roles
    mapping = default_modality_roles(roles, list(declared), tags=role_tags(declared))
    assert mapping == expected
    assert list(mapping) == list(expected)  # the order the modules are built in
