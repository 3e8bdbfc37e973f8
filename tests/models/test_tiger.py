"""TIGER: the two stages on tiny-mm, the user-id token, constrained generation, what sets it
apart from CEMG, the paper's sizes, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits, trained_run

from recbole_mm.model.layers.t5_generator import count_parameters
from recbole_mm.model.sequential_recommender.tiger import hash_user_ids
from recbole_mm.smoke import tiny_settings
from recbole_mm.trainer.multistage import MultiStageTrainer

ROOT = Path(__file__).resolve().parents[2]
SMALL = tiny_settings("TIGER", stage_epochs={"tokenizer": 2, "generator": 1})


def _setup(tiny_root, tmp_path=None, **overrides):
    options = {**SMALL, **overrides}
    if tmp_path is not None:
        options["checkpoint_dir"] = str(tmp_path / "saved")
    return tiny_splits(tiny_root, "TIGER", **options)


def _model(config, train, seed=0):
    return seeded_model("TIGER", config, train, seed)


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """One full two-stage run on tiny-mm (2 tokenizer epochs, 1 generator epoch)."""
    return trained_run(tiny_root, "TIGER", tmp_path_factory.mktemp("tiger"), **SMALL)


def test_hash_user_ids_spreads_users_over_the_buckets():
    users = torch.arange(1, 5001)
    buckets = hash_user_ids(users, buckets=2000)
    assert buckets.min() >= 0 and buckets.max() < 2000
    assert torch.equal(buckets, hash_user_ids(users, buckets=2000))  # a fixed function
    assert torch.unique(buckets).numel() > 1900  # 5,000 users fill (almost) every bucket
    assert not torch.equal(buckets[:2000], users[:2000] % 2000)  # hashed, not the id itself


def test_two_stages_train_and_evaluate(trained):
    config, model, trainer, _, result = trained
    assert model.stages == ("tokenizer", "generator")
    assert set(result) == {"recall@5", "ndcg@5"} and all(0 <= v <= 1 for v in result.values())
    for stage in model.stages:
        assert Path(trainer.stage_checkpoint_file(stage)).is_file()
    # Sec. 3.1: rq_levels codes + the collision code, every tuple unique.
    codes = model.item_codes
    assert codes.shape == (model.n_items, config["rq_levels"] + 1)
    assert (codes[0] == -1).all() and (codes[1:] >= 0).all()
    assert (codes[1:] < config["rq_codebook_size"]).all()
    assert torch.unique(codes[1:], dim=0).shape[0] == model.n_items - 1
    assert model.code_report["after"]["collision_rate"] == 0.0
    # The collision code counts items within a shared tuple: 0 for the first of each.
    first = codes[1:, :-1]
    for tuple_ in torch.unique(first, dim=0):
        members = (first == tuple_).all(1)
        assert sorted(codes[1:][members, -1].tolist()) == list(range(int(members.sum())))


def test_generation_yields_only_real_items_scattered_into_minus_inf(trained):
    config, model, _, (_, _, test), _ = trained
    interaction = next(iter(test))[0]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    assert scores.shape == (len(interaction), model.n_items)
    finite = torch.isfinite(scores)
    assert (finite.sum(1) == config["beam_size"]).all()  # 29 items > 5 beams
    assert not finite[:, 0].any()  # never the padding item
    assert (scores[~finite] == float("-inf")).all()
    rows, items = finite.nonzero(as_tuple=True)
    assert torch.equal(model.trie.items(model.item_codes[items]), items)  # real items only
    # Each beam's score is its codes' summed log-probability, as predict gives it.
    scored = interaction[rows[:5].tolist()]
    scored.update(type(interaction)({model.ITEM_ID: items[:5]}))
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict(scored), scores[rows[:5], items[:5]], atol=1e-4, rtol=0
        )
        hf_default = model.generation_backend
        try:
            model.generation_backend = "hf"
            hf = model.full_sort_predict(interaction)
        finally:
            model.generation_backend = hf_default
    torch.testing.assert_close(hf, scores, atol=1e-4, rtol=0)


def test_the_prompt_starts_with_the_hashed_user_token(tiny_root):
    config, train, _, _ = _setup(tiny_root)
    model = _model(config, train)
    batch = next(iter(train))
    prompt, mask = model._prompt(batch)
    bucket = hash_user_ids(batch[model.USER_ID], buckets=SMALL["user_hash_buckets"])
    assert torch.equal(prompt[:, 0], model.generator.extra_offset + bucket)
    assert (mask[:, 0] == 1).all()
    code_tokens = model.generator.tokens.n_tokens
    assert (prompt[:, 1:] < model.generator.extra_offset).all()  # then codes or padding
    assert model.generator.model.config.vocab_size == 3 + code_tokens + SMALL["user_hash_buckets"]
    # user_hash_buckets: 0 drops the token and its vocabulary.
    config, train, _, _ = _setup(tiny_root, user_hash_buckets=0)
    plain = _model(config, train)
    plain_prompt, _ = plain._prompt(batch)
    assert torch.equal(plain_prompt, prompt[:, 1:])
    assert plain.generator.model.config.vocab_size == 3 + code_tokens
    plain.set_stage("generator")
    assert torch.isfinite(plain.calculate_loss(batch))


def test_tiger_is_cemg_without_the_collaborative_stage(tiny_root):
    """No collab stage, no graph, no user/item embeddings, no fusion, no PCA, no diversity
    term: the RQ-VAE reads the content as the dataset gives it, centred and scaled."""
    config, train, _, _ = _setup(tiny_root)
    tiger = _model(config, train)
    cemg_config, cemg_train, _, _ = tiny_splits(tiny_root, "CEMG", **tiny_settings("CEMG"))
    cemg = seeded_model("CEMG", cemg_config, cemg_train)
    assert "collab" in cemg.stages and "collab" not in tiger.stages
    for part in ("user_embedding", "item_embedding", "fusion", "propagation", "adjacency"):
        assert hasattr(cemg, part) and not hasattr(tiger, part), part
    with pytest.raises(ValueError, match="unknown stage 'collab'"):
        tiger.set_stage("collab")
    # The tokenizer's input is the text features themselves, centred and scaled to unit RMS
    # (CEMG: PCA'd, fused, rescaled).
    text = train._dataset.modality_features("text")
    tiger.set_stage("tokenizer")
    tiger.prepare_stage("tokenizer", train)
    centred = text[1:] - text[1:].mean(0)
    torch.testing.assert_close(tiger.tokenizer_input[1:], centred / centred.pow(2).mean().sqrt())
    assert tiger.rq_encoder[0].in_features == text.shape[1]
    z = tiger.rq_encoder(tiger.tokenizer_input[1:])
    assert tiger._tokenizer_regulariser(z) is None
    assert cemg._tokenizer_regulariser(cemg.rq_encoder(cemg._item_vectors()[1:])) > 0
    # Only the tokenizer trains in its stage.
    trainable = {n.split(".")[0] for n, p in tiger.named_parameters() if p.requires_grad}
    assert trainable == {"rq_encoder", "quantizer", "rq_decoder"}
    tiger.calculate_loss(None).backward()
    assert tiger.rq_encoder[0].weight.grad.abs().sum() > 0


def test_a_resumed_generator_keeps_the_tokenizers_codes(tiny_root, trained, tmp_path):
    config, model, trainer, _, _ = trained
    cfg, train, valid, _ = _setup(
        tiny_root,
        tmp_path,
        train_stage="generator",
        pre_model_path=trainer.stage_checkpoint_file("tokenizer"),
    )
    other = _model(cfg, train, seed=5)
    MultiStageTrainer(cfg, other).fit(train, valid, saved=True, show_progress=False)
    assert torch.equal(other.item_codes, model.item_codes)


def test_the_papers_sizes_are_the_defaults():
    import yaml

    from recbole_mm.properties import model_file

    shipped = yaml.safe_load(model_file("TIGER").read_text())
    assert (shipped["rq_levels"], shipped["rq_codebook_size"], shipped["rq_latent_dim"]) == (
        3,
        256,
        32,
    )
    assert shipped["rq_hidden_sizes"] == [512, 256, 128]
    assert shipped["collision_policy"] == "append" and shipped["user_hash_buckets"] == 2000
    sizes = dict(
        backbone="t5",
        vocab_sizes=[shipped["rq_codebook_size"]] * (shipped["rq_levels"] + 1),
        d_model=shipped["t5_d_model"],
        d_ff=shipped["t5_d_ff"],
        n_layers=shipped["t5_layers"],
        n_heads=shipped["t5_heads"],
        d_kv=shipped["t5_d_kv"],
        extra_tokens=shipped["user_hash_buckets"],
    )
    # 6 heads of 64 over d_model 128: the attention is wider than the model (not 128 / 6).
    assert count_parameters(**sizes) == 4_847_104


def test_the_rq_vae_reads_centred_unit_rms_content(tiny_root):
    config, train, _, _ = _setup(tiny_root)
    model = _model(config, train)
    x = model._item_vectors()
    torch.testing.assert_close(x[1:].mean(0), torch.zeros(x.shape[1]), atol=1e-5, rtol=0)
    assert x[1:].pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)
    assert (x[0] == 0).all()  # padding
    # The same directions as the content: a centring and one scale, nothing else.
    raw = model.features.concatenated()[1:]
    centred = raw - raw.mean(0)
    torch.testing.assert_close(x[1:] * centred.pow(2).mean().sqrt(), centred)
    config, train, _, _ = _setup(tiny_root, rq_input_norm="none")
    plain = _model(config, train)
    torch.testing.assert_close(plain._item_vectors(), plain.features.concatenated())


def test_bad_configuration(tiny_root):
    config, train, _, _ = _setup(tiny_root, user_hash_buckets=-1)
    with pytest.raises(ValueError, match="user_hash_buckets = -1 must be an integer >= 0"):
        _model(config, train)
    config, train, _, _ = _setup(tiny_root, modality_roles={})
    with pytest.raises(ValueError, match="TIGER tokenises item content"):
        _model(config, train)
    config, train, _, _ = _setup(tiny_root, beam_size=3)
    with pytest.raises(ValueError, match="beam_size = 3"):
        _model(config, train)


def test_another_modality_can_play_the_textual_role(tiny_root):
    config, train, _, _ = _setup(tiny_root, modality_roles={"textual": "image"})
    model = _model(config, train)
    assert model.modality_roles == {"textual": "image"}
    assert model.rq_encoder[0].in_features == 6


def test_cli_end_to_end(tiny_root, tmp_path):
    import yaml

    options = tiny_config(tiny_root, **SMALL, checkpoint_dir=str(tmp_path / "saved"))
    (tmp_path / "tiger.yaml").write_text(yaml.safe_dump(options))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_recbole_mm.py"),
            "--model=TIGER",
            f"--dataset={TINY}",
            f"--config_files={tmp_path / 'tiger.yaml'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "saved").glob("TIGER-tiny-mm-generator.pth"))
