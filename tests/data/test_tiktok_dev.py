"""The real development dataset tiktok-dev (version 2 of its split: one held-out item per user),
imported as a user would; skipped where ../shared (development data, not shipped) is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIKTOK_DEV = Path(
    os.environ.get("RECBOLE_MM_TIKTOK_DEV", REPO.parent / "shared" / "data" / "tiktok-dev")
)

pytestmark = pytest.mark.skipif(
    not (TIKTOK_DEV / "tiktok-dev.inter").is_file(), reason=f"{TIKTOK_DEV} is not available"
)


def test_tiktok_dev_imports_and_loads_with_its_yaml(tmp_path):
    from dataset_tools.mmrec import import_mmrec
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset, data_preparation

    import_mmrec(
        mmrec_dir=TIKTOK_DEV,
        out=tmp_path,
        name="tiktok-dev",
        features={"visual": "image_feat.npy", "acoustic": "audio_feat.npy"},
    )
    config = Config(
        model="VBPR",
        dataset="tiktok-dev",
        config_dict={"data_path": str(tmp_path), "state": "ERROR", "show_progress": False},
    )
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert (dataset.user_num - 1, dataset.item_num - 1) == (9298, 6245)
    assert [len(d._dataset) for d in (train, valid, test)] == [51032, 4274, 4235]
    assert {m: dataset.modality_features(m).shape[1] for m in dataset.modalities} == {
        "visual": 128,
        "acoustic": 128,
    }
    assert config["valid_metric"] == "Recall@20"
