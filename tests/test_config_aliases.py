"""Renamed settings: the old name still reaches the model, with a warning naming the new key;
the shipped property files use the new names only."""

from __future__ import annotations

import logging
import pickle

import pytest
import yaml
from conftest import TINY, tiny_config

from recbole_mm import config as config_module
from recbole_mm import properties
from recbole_mm.config import (
    ALIASES,
    Config,
    ConfigError,
    known_keys,
    nearest_key,
    parse_overrides,
)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(config_module, "_warned", set())


def _config(root, model, argv=(), **settings):
    return Config(
        model=model,
        dataset=TINY,
        config_dict=tiny_config(root, **settings),
        overrides=parse_overrides(argv),
    )


def test_old_key_on_the_command_line_reaches_the_model_with_a_warning(tiny_root, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        config = _config(tiny_root, "GTC", ["--gtc_modalities=[]"])
    assert config["modality_roles"] == {} and "gtc_modalities" not in config
    assert (
        "Setting 'gtc_modalities' (on the command line) is renamed 'modality_roles' and read as "
        "modality_roles = {}" in caplog.text
    )
    assert "Unknown setting" not in caplog.text


@pytest.mark.parametrize(
    ("model", "old", "expected"),
    [
        ("GTC", {"gtc_modalities": ["text"]}, {"text": "text"}),
        ("GTC", {"gtc_modalities": "image"}, {"image": "image"}),
        ("MMGRec", {"mmgrec_modalities": []}, None),  # [] meant every modality
        ("VBPR", {"vbpr_modalities": ["image", "text"]}, {"image": "image", "text": "text"}),
        (
            "IMECD",
            {"imecd_modalities": {"text": "text", "image": "kg"}},
            {"textual": "text", "visual": "kg"},
        ),
        ("IMECD", {"imecd_modalities": {"image": None}}, {"textual": None, "visual": None}),
        ("IMECD", {"imecd_modalities": None}, {"textual": "text", "visual": "image"}),
        ("CEMG", {"use_visual": False}, {"visual": None, "textual": "text"}),
        ("CEMG", {"use_textual": False, "use_visual": True}, {"visual": "image", "textual": None}),
        (
            "CEMG",
            {"use_visual": False, "modality_roles": {"visual": "text", "textual": "image"}},
            {"visual": None, "textual": "image"},
        ),
    ],
)
def test_old_modality_keys_translate(tiny_root, model, old, expected):
    config = _config(tiny_root, model, **old)
    assert config["modality_roles"] == expected
    assert not set(old) - {"modality_roles"} & set(config.final_config_dict)


@pytest.mark.parametrize(
    ("model", "old", "value", "new", "expected"),
    [
        ("CEMG", "gcn_layers", 3, "n_layers", 3),
        ("MMGRec", "n_graph_layers", 3, "n_layers", 3),
        ("MMGRec", "n_semantic_levels", 2, "rq_levels", 2),
        ("MMGRec", "codebook_size", 16, "rq_codebook_size", 16),
        ("MMGRec", "rqvae_hidden_size", 16, "rq_hidden_sizes", [16]),
        ("MMGRec", "rqvae_latent_dim", 8, "rq_latent_dim", 8),
        ("MMGRec", "rqvae_beta", 0.5, "rq_commitment_weight", 0.5),
        ("CEMG", "lambda_q", 0.5, "rq_commitment_weight", 0.5),
        ("IMECD", "lambda_q", 0.5, "vq_injection_weight", 0.5),
        ("IMECD", "n_codes", 8, "vq_codebook_size", 8),
        ("MMGRec", "rqvae_kmeans_init", False, "rq_kmeans_init", False),
        ("MMGRec", "rqvae_dead_code_reset", False, "rq_dead_code_reset", False),
        ("MMGRec", "rqvae_input", "features", "rq_input", "features"),
        ("MMGRec", "max_history", 4, "history_length", 4),
        ("GTC", "gtc_diffusion_steps", 7, "diffusion_steps", 7),
        ("IMECD", "n_steps", 7, "diffusion_steps", 7),
        ("GTC", "gtc_beta_start", 0.001, "beta_start", 0.001),
        ("GTC", "gtc_beta_end", 0.01, "beta_end", 0.01),
        ("GTC", "gtc_eval_sample_steps", 2, "diffusion_eval_steps", 2),
        ("IMECD", "imecd_eval_steps", 1, "diffusion_eval_steps", 1),
    ],
)
def test_renamed_keys_translate(tiny_root, model, old, value, new, expected):
    config = _config(tiny_root, model, [f"--{old}={value}"])
    assert config[new] == expected and old not in config


def test_an_old_key_reaches_the_model_with_a_warning(tiny_root, caplog):
    from recbole_mm.utils import create_dataset, data_preparation, get_model

    small = {"embedding_size": 4, "rq_levels": 2, "rq_codebook_size": 8, "rq_latent_dim": 4}
    small.update(t5_d_model=8, t5_d_ff=16, t5_layers=1, t5_heads=2, beam_size=5)
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        config = _config(tiny_root, "CEMG", ["--gcn_layers=3", "--lambda_q=0.5"], **small)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("CEMG")(config, train._dataset)
    assert model.propagation.n_layers == 3 and model.quantizer.beta == 0.5
    assert "Setting 'gcn_layers' (on the command line) is renamed 'n_layers'" in caplog.text
    assert (
        "Setting 'lambda_q' (on the command line) is renamed 'rq_commitment_weight'" in caplog.text
    )


def test_an_old_key_of_another_model_is_left_alone(tiny_root):
    config = _config(tiny_root, "VBPR", gtc_modalities=[])
    assert config["gtc_modalities"] == [] and config["modality_roles"] is None


def test_the_new_key_set_as_high_wins(tiny_root, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        config = _config(tiny_root, "GTC", gtc_modalities=[], modality_roles={"text": "text"})
    assert config["modality_roles"] == {"text": "text"}
    assert "'modality_roles', which is also set (in config_dict)" in caplog.text
    # the old key on a higher layer wins over the new one
    config = _config(tiny_root, "GTC", ["--gtc_modalities=[]"], modality_roles={"text": "text"})
    assert config["modality_roles"] == {}


def test_a_bad_old_value_names_the_new_key(tiny_root):
    with pytest.raises(ConfigError, match="imecd_modalities = .*audio.*modality_roles"):
        _config(tiny_root, "IMECD", imecd_modalities={"audio": "text"})


def test_a_checkpoint_configuration_with_old_keys_is_translated(tiny_root):
    config = _config(tiny_root, "GTC")
    final = config.final_config_dict
    # What an earlier release saved: its own keys, and a dataset-level mapping for CEMG.
    del final["modality_roles"]
    final.update(gtc_modalities=None, modality_roles={"visual": "image", "textual": "text"})
    loaded = pickle.loads(pickle.dumps(config))
    assert loaded["modality_roles"] is None and "gtc_modalities" not in loaded
    final.update(gtc_modalities=["text"])
    assert pickle.loads(pickle.dumps(config))["modality_roles"] == {"text": "text"}


def test_a_weights_only_checkpoint_with_old_keys_loads_as_it_was_trained(tiny_root):
    """recbole_mm's own checkpoints store the final settings as a dict (load_config): an earlier
    release's GTC/VBPR read every modality in the dataset's order and ignored the dataset's
    CEMG-only modality_roles; loading must not hand them CEMG's roles (GTC's projections would
    miss, VBPR's feature blocks would swap silently)."""
    from recbole_mm.trainer.checkpoint import load_config

    for model, old_key in (("GTC", "gtc_modalities"), ("VBPR", "vbpr_modalities")):
        saved = dict(_config(tiny_root, model).final_config_dict)
        del saved["modality_roles"]
        saved.update(
            {old_key: None, "modality_roles": {"visual": "image", "textual": "text"}},
            gtc_diffusion_steps=7,
        )
        config = load_config({"config": saved, "config_overrides": {}})
        assert config["modality_roles"] is None, model
        assert old_key not in config.final_config_dict
        if model == "GTC":
            assert config["diffusion_steps"] == 7


def test_old_keys_are_known_but_never_suggested():
    assert {alias.old for alias in ALIASES} <= known_keys()
    assert nearest_key("gtc_modalitis") != "gtc_modalities"
    assert nearest_key("modality_role") == "modality_roles"


def test_shipped_property_files_use_the_new_names_only():
    old = {alias.old for alias in ALIASES}
    for file in sorted(properties.properties_dir().rglob("*")):
        if file.suffix == ".yaml":
            keys = set(yaml.safe_load(file.read_text()) or {})
        elif file.suffix == ".hyper":
            lines = file.read_text().splitlines()
            keys = {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}
        else:
            continue
        assert not keys & old, f"{file.name} uses old names {sorted(keys & old)}"
