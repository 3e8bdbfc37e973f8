"""docs/adding_a_model.md's smallest complete model runs as printed: it builds on the tiny
dataset through the bases, refuses a bad setting through SETTINGS, trains and ranks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_splits

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding_a_model.md"


def _example():
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own example
    return namespace["ContentLightGCN"]


def test_the_example_model_trains_and_ranks(tiny_root):
    model_class = _example()
    # VBPR's configuration on the tiny dataset: a multimodal dataset with its features.
    config, train, _, _ = tiny_splits(tiny_root, "VBPR", n_layers=2)
    torch.manual_seed(0)
    model = model_class(config, train._dataset)
    assert set(model.features.roles) == {"text", "image"}
    batch = next(iter(train))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.projection.weight.grad.abs().sum() > 0
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert scores.shape == (len(batch), model.n_items)
        pairwise = model.predict(batch)
        rows = torch.arange(len(batch))
        torch.testing.assert_close(scores[rows, batch[model.ITEM_ID]], pairwise)


def test_the_example_model_refuses_a_bad_setting(tiny_root):
    model_class = _example()
    config, train, _, _ = tiny_splits(tiny_root, "VBPR", n_layers=-1)
    with pytest.raises(ValueError, match=r"ContentLightGCN: n_layers = -1 must be an integer >= 0"):
        model_class(config, train._dataset)
