"""Serving: top-K items for known users from a saved checkpoint, with titles."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY, tiny_config, write_tiny_dataset

from recbole_mm.quick_start import load_data_and_model, run_recbole_mm
from recbole_mm.recommend import main


@pytest.fixture(scope="module")
def titled_root(tmp_path_factory):
    """The tiny dataset plus a .item file with a title per item."""
    root = tmp_path_factory.mktemp("titled")
    write_tiny_dataset(root / TINY)
    lines = ["item_id:token\ttitle:token_seq\n"]
    lines += [f"i{i}\tFilm number {i}\n" for i in range(1, 31)]
    (root / TINY / f"{TINY}.item").write_text("".join(lines))
    return root


def _expected_top(checkpoint, user, k):
    """Top-k by the reloaded model's own scores, the user's interacted items left out."""
    _, model, dataset, *_ = load_data_and_model(checkpoint)
    uid = dataset.token2id(dataset.uid_field, user)
    from recbole.data.interaction import Interaction

    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({dataset.uid_field: torch.tensor([uid])}))
    scores = scores.view(-1).clone()
    seen = dataset.inter_feat[dataset.iid_field][dataset.inter_feat[dataset.uid_field] == uid]
    scores[seen] = -torch.inf
    scores[0] = -torch.inf
    return list(dataset.id2token(dataset.iid_field, torch.topk(scores, k).indices.numpy()))


@pytest.mark.parametrize("model", ["VBPR", "BPR"])
def test_recommend_prints_the_model_top_items_with_titles(
    model, titled_root, run_in_tmp, monkeypatch
):
    config = tiny_config(titled_root, epochs=1, checkpoint_dir=str(run_in_tmp / model))
    checkpoint = run_recbole_mm(model, TINY, config_dict=config)["checkpoint"]
    expected = _expected_top(checkpoint, "u3", 4)
    if model == "VBPR":  # the command as a user types it
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "recbole_mm.recommend",
                f"--checkpoint={checkpoint}",
                "--users=u3,u7",
                "--topk=4",
            ],
            capture_output=True,
            text=True,
            cwd=run_in_tmp,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        block = lines[lines.index("user u3") + 1 : lines.index("user u7")]
        assert [line.split()[2] for line in block] == expected
        assert all(f"Film number {item[1:]}" in line for item, line in zip(expected, block))
    else:
        # The process's command line is not the run's: neither read nor rewritten.
        stray = ["recommend", "--embedding_size=3"]
        monkeypatch.setattr(sys, "argv", list(stray))
        result = main([f"--checkpoint={checkpoint}", "--users=u3", "--topk=4"])
        assert [item for item, _ in result["u3"]] == expected
        assert sys.argv == stray


def test_recommend_json_and_bad_input(titled_root, run_in_tmp, capsys):
    config = tiny_config(titled_root, epochs=1, checkpoint_dir=str(run_in_tmp))
    checkpoint = run_recbole_mm("BPR", TINY, config_dict=config)["checkpoint"]
    capsys.readouterr()
    main([f"--checkpoint={checkpoint}", "--users=u1", "--topk=2", "--format=json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in out["u1"]] == [1, 2]
    assert out["u1"][0]["title"].startswith("Film number")

    with pytest.raises(SystemExit):
        main([f"--checkpoint={checkpoint}", "--users=nobody"])
    assert "users=nobody not in dataset" in capsys.readouterr().err

    # A pickled checkpoint (RecBole's format) is refused unless trusted: unpickling runs code.
    pickled = run_in_tmp / "pickled.pth"
    torch.save({"config": torch.nn.ReLU()}, pickled)
    with pytest.raises(SystemExit):
        main([f"--checkpoint={pickled}", "--users=u1"])
    assert "trusted" in capsys.readouterr().err
