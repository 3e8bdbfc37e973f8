"""Tiny per-model settings for smoke runs: the sizes that make every recbole_mm model build,
train and rank in seconds on a CPU, shared by the test suite (the contract test over every model
and the per-model tests under tests/models/) and ``benchmarks/gpu_suite.py --smoke``.

They sit on top of a model's YAML and of the run's common settings (the tests' ``tiny_config``,
the shared ``TINY_COMMON`` below); each user adds what it needs, and says why, through
:func:`tiny_settings`. The seeded golden values of tests/models/test_generative.py (MMGRec, CEMG)
were recorded at these sizes: changing one here changes those numbers.
"""

from __future__ import annotations

import copy

# The settings every smoke run shares, on top of each model's own (TINY_MODEL_SETTINGS): the
# tests' tiny_config and benchmarks/gpu_suite.py --smoke start from them.
TINY_COMMON: dict = {
    "epochs": 1,
    "train_batch_size": 64,
    "eval_batch_size": 4096,
    "embedding_size": 8,
    "hidden_size": 8,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "show_progress": False,
    "metrics": ["Recall", "NDCG"],
}

# The RQ-VAE and T5 generator of the semantic-id sequential models (CEMG, TIGER), at tiny sizes.
_TINY_SEMANTIC_IDS = {
    "rq_levels": 2,
    "rq_codebook_size": 8,
    "rq_hidden_sizes": [8],
    "rq_latent_dim": 4,
    "t5_d_model": 8,
    "t5_d_ff": 16,
    "t5_layers": 1,
    "t5_heads": 2,
    "beam_size": 5,
    "history_length": 5,
}

# Model -> settings. Every recbole_mm model has an entry (the contract test checks it), even
# one that needs nothing beyond the common tiny settings.
TINY_MODEL_SETTINGS: dict[str, dict] = {
    "VBPR": {},
    "FREEDOM": {"knn_k": 3},
    "BM3": {},
    "LATTICE": {"knn_k": 3},
    "LGMRec": {},
    "MGCN": {"knn_k": 3},
    "GTC": {"diffusion_steps": 10, "gtc_denoiser_hidden_size": 8},
    "IMECD": {
        "diffusion_steps": 4,
        "vq_codebook_size": 4,
        "n_experts": 2,
        "id_n_layers": 1,
        "n_heads": 2,
    },
    "MMGRec": {
        "rq_codebook_size": 4,
        "rq_levels": 2,
        "popularity_vocab_size": 32,
        "rq_latent_dim": 4,
        "rq_hidden_sizes": [8],
        "n_heads": 2,
        "history_length": 6,
    },
    "CEMG": {"embedding_size": 4, **_TINY_SEMANTIC_IDS},
    "TIGER": {
        **_TINY_SEMANTIC_IDS,
        "t5_d_kv": 4,
        "user_hash_buckets": 16,
        # The paper's Adagrad at 0.4 collapses these 4-d codebooks within a few steps (14 of
        # 29 items on one tuple at seed 2020, which 8 collision codes cannot separate).
        "stage_learning_rate": {"tokenizer": 0.05, "generator": 0.01},
    },
}


def tiny_common(**overrides) -> dict:
    """A fresh copy of :data:`TINY_COMMON` with ``overrides`` applied."""
    settings = copy.deepcopy(TINY_COMMON)
    settings.update(copy.deepcopy(overrides))
    return settings


def tiny_stage_epochs(model_class: type, epochs: int = 1) -> dict:
    """``{"stage_epochs": {stage: epochs}}`` for a model trained in stages, else ``{}``."""
    stages = tuple(getattr(model_class, "stages", ()) or ())
    return {"stage_epochs": {stage: epochs for stage in stages}} if stages else {}


def tiny_settings(model: str, **overrides) -> dict:
    """A fresh copy of ``model``'s tiny settings with ``overrides`` applied.

    A model without an entry (RecBole's own, e.g. LightGCN) gets ``{}`` before the overrides.
    An override of a key already there keeps the key's place in the dictionary, so a command
    line built from it lists the keys in the same order.
    """
    settings = copy.deepcopy(TINY_MODEL_SETTINGS.get(model, {}))
    settings.update(copy.deepcopy(overrides))
    return settings
