"""Shared fixtures: a tiny multimodal dataset written in RecBole's atomic format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recbole_mm.data.features import save_modality

# Keep RecBole's artefacts (logs, checkpoints) and the embedded-dataset cache out of the checkout.
os.environ.setdefault(
    "RECBOLE_MM_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "rbmm-test-cache")
)

TINY = "tiny-mm"
N_USERS, N_ITEMS = 40, 30


def write_tiny_dataset(
    folder: Path,
    *,
    name: str = TINY,
    seed: int = 0,
    image_missing: int = 3,
    benchmark: bool = False,
) -> dict:
    """Write ``name``.inter (or train/valid/test files) and two modalities; return facts."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(1, N_USERS + 1):
        items = rng.choice(np.arange(1, N_ITEMS + 1), size=rng.integers(6, 12), replace=False)
        for t, i in enumerate(items):
            rows.append(
                (f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(1_000_000 + 100 * u + t))
            )
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    fmt = "{}\t{}\t{}\t{}\n"
    if benchmark:
        parts = {"train": [], "valid": [], "test": []}
        by_user: dict[str, list] = {}
        for r in rows:
            by_user.setdefault(r[0], []).append(r)
        for user_rows in by_user.values():
            parts["train"] += user_rows[:-2]
            parts["valid"].append(user_rows[-2])
            parts["test"].append(user_rows[-1])
        for part, part_rows in parts.items():
            (folder / f"{name}.{part}.inter").write_text(
                header + "".join(fmt.format(*r) for r in part_rows)
            )
    else:
        (folder / f"{name}.inter").write_text(header + "".join(fmt.format(*r) for r in rows))
    items = [f"i{i}" for i in range(1, N_ITEMS + 1)]
    text = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    # Rows in reverse order, plus two items that never occur in the interactions.
    save_modality(
        folder,
        name,
        "text",
        tokens=items[::-1] + ["ghost1", "ghost2"],
        features=np.vstack([text[::-1], np.ones((2, 8), np.float32)]),
    )
    image = rng.normal(size=(N_ITEMS, 6)).astype(np.float32)
    kept = items[image_missing:]
    save_modality(folder, name, "image", tokens=kept, features=image[image_missing:])
    return {
        "text": dict(zip(items, text)),
        "image": dict(zip(kept, image[image_missing:])),
        "missing_image": items[:image_missing],
        "n_inter": len(rows),
    }


def tiny_config(data_root: Path, **overrides) -> dict:
    """A configuration dict for fast runs on the tiny dataset."""
    from recbole_mm.smoke import tiny_common

    config = {
        "data_path": str(data_root),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "modalities": {"text": {"dim": 8}, "image": {"dim": 6}},
        **tiny_common(),
        "state": "ERROR",
        "use_gpu": False,
        "checkpoint_dir": str(data_root / "saved"),
        "log_wandb": False,
        "metrics": ["Recall", "NDCG"],
        "topk": [5],
        "valid_metric": "NDCG@5",
    }
    config.update(overrides)
    return config


def tiny_splits(data_root: Path, model: str, *, name: str = TINY, **overrides) -> tuple:
    """``(config, train, valid, test)``: ``model``'s configuration and RecBole's loaders on a
    tiny dataset, with :func:`tiny_config` and ``overrides``."""
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation

    config = Config(model=model, dataset=name, config_dict=tiny_config(data_root, **overrides))
    return (config, *data_preparation(config, create_dataset(config)))


def seeded_model(model: str, config, train, seed: int = 0):
    """A fresh ``model`` on ``train``'s dataset, its weights drawn under ``init_seed(seed)``."""
    from recbole.utils import init_seed

    from recbole_mm.utils import get_model

    init_seed(seed, True)
    return get_model(model)(config, train._dataset)


def trained_run(data_root: Path, model: str, folder: Path, **overrides) -> tuple:
    """One full multi-stage training run of ``model`` on the tiny dataset (weights drawn under
    seed 0, checkpoints under ``folder``), tested with its best checkpoint.

    Returns:
        ``(config, model, trainer, (train, valid, test), test result)``.
    """
    from recbole_mm.trainer.multistage import MultiStageTrainer

    config, train, valid, test = tiny_splits(
        data_root, model, checkpoint_dir=str(folder / "saved"), **overrides
    )
    net = seeded_model(model, config, train)
    trainer = MultiStageTrainer(config, net)
    trainer.fit(train, valid, saved=True, show_progress=False)
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    return config, net, trainer, (train, valid, test), result


def tiny_code_generator(backbone: str, vocab_sizes, *, seed: int = 0, max_prompt_tokens: int = 24):
    """A small :class:`CodeGenerator` (d_model 8, one block each side, no dropout), in eval mode,
    its weights drawn under ``torch.manual_seed(seed)``."""
    import torch

    from recbole_mm.model.layers.t5_generator import CodeGenerator

    torch.manual_seed(seed)
    return CodeGenerator(
        backbone=backbone,
        vocab_sizes=vocab_sizes,
        d_model=8,
        d_ff=16,
        n_layers=1,
        n_heads=2,
        dropout=0.0,
        max_prompt_tokens=max_prompt_tokens,
    ).eval()


def save_tiny_vit(folder: Path, *, size: int = 16, hidden: int = 8, num_labels: int = 0) -> Path:
    """A randomly initialised ViT and its image processor, saved like a hub checkpoint.

    With ``num_labels`` it is a classification checkpoint, which (like
    google/vit-base-patch16-224) carries no pooler weights.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    config = ViTConfig(
        image_size=size,
        patch_size=size // 2,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        num_labels=max(num_labels, 1),
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config) if num_labels else ViTModel(config)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_dataset(root / TINY)
    return root


@pytest.fixture
def run_in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that RecBole's log/ and saved/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """RecBole's Config reads --key=value from sys.argv: keep pytest's own options out of it."""
    monkeypatch.setattr("sys.argv", ["pytest"])
