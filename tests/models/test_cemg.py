"""CEMG: stages on tiny-mm, tokenisation, constrained generation, stage resume, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits, trained_run, write_tiny_dataset
from recbole_ranking import recbole_hits

from recbole_mm.evaluation import evaluate_cold_start
from recbole_mm.model.layers.quantizer import ResidualQuantizer
from recbole_mm.model.sequential_recommender.cemg import diversity_loss
from recbole_mm.smoke import tiny_settings
from recbole_mm.trainer.multistage import MultiStageTrainer

ROOT = Path(__file__).resolve().parents[2]
# The shared tiny sizes, and the epochs of each stage for the three-stage runs below.
SMALL = tiny_settings("CEMG", stage_epochs={"collab": 1, "tokenizer": 2, "generator": 1})


def _setup(tiny_root, tmp_path=None, **overrides):
    options = {**SMALL, **overrides}
    if tmp_path is not None:
        options["checkpoint_dir"] = str(tmp_path / "saved")
    return tiny_splits(tiny_root, "CEMG", **options)


def _model(config, train, seed=0):
    return seeded_model("CEMG", config, train, seed)


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """One full three-stage run on tiny-mm, 1-2 epochs per stage."""
    return trained_run(tiny_root, "CEMG", tmp_path_factory.mktemp("cemg"), **SMALL)


def test_three_stages_train_and_evaluate(trained):
    config, model, trainer, _, result = trained
    assert set(result) == {"recall@5", "ndcg@5"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    for stage in model.stages:
        assert Path(trainer.stage_checkpoint_file(stage)).is_file()
    report = model.code_report
    assert report["after"]["collision_rate"] == 0.0
    assert len(report["before"]["usage_per_level"]) == config["rq_levels"]


def test_codes_unique_and_generation_valid(trained):
    config, model, _, (_, _, test), _ = trained
    codes = model.item_codes
    assert (codes[0] == -1).all()
    assert (codes[1:] >= 0).all() and (codes[1:] < config["rq_codebook_size"]).all()
    assert torch.unique(codes[1:], dim=0).shape[0] == model.n_items - 1
    interaction = next(iter(test))[0]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    finite = torch.isfinite(scores)
    assert (finite.sum(1) == config["beam_size"]).all()  # 29 valid items > 5 beams
    assert not finite[:, 0].any()
    # Every generated item decodes through the trie to itself.
    rows, items = finite.nonzero(as_tuple=True)
    assert torch.equal(model.trie.items(codes[items]), items)
    # The Eq. 6 score of a generated item is its codes' summed log-probability.
    scored = interaction[rows[:5].tolist()]
    scored.update(type(interaction)({model.ITEM_ID: items[:5]}))
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict(scored), scores[rows[:5], items[:5]], atol=1e-4, rtol=0
        )


def test_hf_generate_agrees_with_shared_constrained_search(tiny_root, trained):
    config, model, _, (_, _, test), _ = trained
    interaction = next(iter(test))[0]
    model.eval()
    default = model.generation_backend
    with torch.no_grad():
        try:
            model.generation_backend = "hf"
            hf = model.full_sort_predict(interaction)
            model.generation_backend = "shared"
            shared = model.full_sort_predict(interaction)
        finally:
            model.generation_backend = default
    assert torch.equal(torch.isfinite(hf), torch.isfinite(shared))
    torch.testing.assert_close(hf, shared, atol=1e-4, rtol=0)


def test_each_stage_resumes_from_its_checkpoint(tiny_root, trained, tmp_path):
    config, model, trainer, (train, valid, test), _ = trained
    # Tokenizer checkpoint + train_stage=generator: the codes come from the loaded tokenizer.
    cfg, train2, valid2, _ = _setup(
        tiny_root,
        tmp_path,
        train_stage="generator",
        pre_model_path=trainer.stage_checkpoint_file("tokenizer"),
    )
    other = _model(cfg, train2, seed=5)
    MultiStageTrainer(cfg, other).fit(train2, valid2, saved=True, show_progress=False)
    assert torch.equal(other.item_codes, model.item_codes)
    # Collab checkpoint + train_stage=tokenizer: the collaborative weights are the loaded ones.
    cfg, train3, valid3, _ = _setup(
        tiny_root,
        tmp_path,
        train_stage="tokenizer",
        pre_model_path=trainer.stage_checkpoint_file("collab"),
    )
    third = _model(cfg, train3, seed=6)
    MultiStageTrainer(cfg, third).fit(train3, valid3, saved=True, show_progress=False)
    collab = torch.load(trainer.stage_checkpoint_file("collab"), weights_only=True)["state_dict"]
    assert torch.equal(third.item_embedding.weight, collab["item_embedding.weight"])
    assert torch.equal(third.fusion.query.weight, collab["fusion.query.weight"])
    assert not torch.equal(third.rq_encoder[0].weight, collab["rq_encoder.0.weight"])


def test_stage_switch_freezes_the_others(tiny_root):
    config, train, _, _ = _setup(tiny_root)
    model = _model(config, train)
    batch = next(iter(train))
    for stage, part in (
        ("collab", model.fusion),
        ("tokenizer", model.quantizer),
        ("generator", model.generator),
    ):
        model.set_stage(stage)
        model.prepare_stage(stage, train)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {n for n, p in model.named_parameters() if _inside(model, n, stage)}
        loss = model.calculate_loss(batch)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
        model.zero_grad()
    with pytest.raises(ValueError, match="unknown stage"):
        model.set_stage("llm")


def _inside(model, name, stage):
    prefixes = {
        "collab": ("user_embedding", "item_embedding", "fusion"),
        "tokenizer": ("rq_encoder", "quantizer", "rq_decoder"),
        "generator": ("generator",),
    }[stage]
    return name.startswith(prefixes)


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_collab": False},
        {"modality_roles": {"visual": None, "textual": "text"}},
        {"modality_roles": {"visual": "image"}},
        {"generator_backbone": "decoder", "decoder_only_layers": 1},
        {"collision_policy": "append"},
    ],
    ids=["wo_collab", "wo_image", "wo_text", "wo_llm", "append"],
)
def test_ablations_build_and_run(tiny_root, overrides):
    config, train, _, test = _setup(tiny_root, **overrides)
    model = _model(config, train)
    for stage in model.stages:
        model.set_stage(stage)
        model.prepare_stage(stage, train)
        loss = model.calculate_loss(next(iter(train)))
        assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(next(iter(test))[0])
    assert (torch.isfinite(scores).sum(1) == config["beam_size"]).all()
    width = model.tokenizer_input.shape[1]
    expected = 4 * (int(overrides.get("use_collab", True)) + 1)
    assert width == expected


def test_bad_configuration(tiny_root):
    with pytest.raises(ValueError, match=r"modality_roles\['visual'\] = 'photo'"):
        config, train, _, _ = _setup(
            tiny_root, modality_roles={"visual": "photo", "textual": "text"}
        )
        _model(config, train)
    config, train, _, _ = _setup(tiny_root, beam_size=3)
    with pytest.raises(ValueError, match="beam_size = 3"):
        _model(config, train)
    config, train, _, _ = _setup(tiny_root, collision_policy="drop")
    with pytest.raises(ValueError, match="collision_policy = 'drop'"):
        _model(config, train)


def test_rows_short_of_top_k_are_refused_not_filled_by_ties(tiny_root, monkeypatch):
    """Issue 13.5: a row with fewer than max(topk) generated items was completed by RecBole's
    topk with -inf items in tie order, and those that are positives counted as hits. Here the
    generator loses two of five beams and every other item is a positive."""
    config, train, _, test = _setup(tiny_root)
    model = _model(config, train)
    model.set_stage("generator")
    interaction = next(iter(test))[0]
    n, kept = model.n_items, torch.tensor([model.n_items - 1, model.n_items - 2, model.n_items - 3])

    def lossy(interaction, masked):  # either backend's beams, two of five lost
        items = torch.full((len(interaction), 5), -1)
        items[:, :3] = kept
        scores = torch.tensor([-1.0, -2.0, -3.0, float("-inf"), float("-inf")])
        return items, scores.expand(len(interaction), 5)

    monkeypatch.setattr(model, "_generate", lossy)
    outside = torch.ones(len(interaction), n, dtype=torch.bool)
    outside[:, 0] = False
    outside[:, kept] = False
    positive_u, positive_i = outside.nonzero(as_tuple=True)
    with pytest.raises(RuntimeError, match="fewer than the largest top-K = 5"):
        recbole_hits(config, model, (interaction, None, positive_u, positive_i))


def test_wo_llm_decoder_is_smaller_than_the_t5_it_replaces(tiny_root):
    """Sec. 4.3 "w/o LLM" replaces the LLM by a smaller 6-layer decoder trained from scratch. A
    decoder as large as the T5 (here: 6 blocks against a 1 + 1-layer T5 of width 8) inverts the
    ablation and is refused, naming the number of layers that fits."""
    config, train, _, _ = _setup(tiny_root, generator_backbone="decoder")
    assert config["decoder_only_layers"] == 6  # CEMG paper, ablation "w/o LLM"
    with pytest.raises(
        ValueError, match=r"decoder_only_layers = 6 has .* Use decoder_only_layers <= 2"
    ):
        _model(config, train)
    config, train, _, _ = _setup(tiny_root, generator_backbone="decoder", decoder_only_layers=2)
    decoder = _model(config, train).generator
    assert decoder.model.config.n_layer == 2
    config, train, _, _ = _setup(tiny_root)  # T5: t5_layers encoder and decoder blocks
    t5 = _model(config, train).generator
    assert t5.model.config.num_decoder_layers == SMALL["t5_layers"]
    n_params = [sum(p.numel() for p in g.parameters()) for g in (decoder, t5)]
    assert n_params[0] < n_params[1]


def test_paper_sized_defaults_keep_the_wo_llm_decoder_smaller():
    """At the shipped sizes (t5-base's shape, the paper's d = 768 and K = 512) the paper's
    6-layer decoder is about a fifth of the T5."""
    import yaml

    from recbole_mm.model.layers.t5_generator import count_parameters
    from recbole_mm.properties import model_file

    shipped = yaml.safe_load(model_file("CEMG").read_text())
    assert (shipped["embedding_size"], shipped["t5_d_model"], shipped["rq_codebook_size"]) == (
        768,
        768,
        512,
    )
    sizes = dict(
        vocab_sizes=[shipped["rq_codebook_size"]] * shipped["rq_levels"],
        d_model=shipped["t5_d_model"],
        d_ff=shipped["t5_d_ff"],
        n_heads=shipped["t5_heads"],
        max_prompt_tokens=shipped["history_length"] * shipped["rq_levels"],
    )
    decoder = count_parameters(backbone="decoder", n_layers=shipped["decoder_only_layers"], **sizes)
    t5 = count_parameters(backbone="t5", n_layers=shipped["t5_layers"], **sizes)
    assert decoder < t5 / 4


def test_modalities_narrower_than_d_are_zero_padded(tiny_root):
    """d above a modality's width (the paper's 768 against 384-d text) keeps all its principal
    components and pads with zeros, instead of refusing the paper's size."""
    config, train, _, test = _setup(tiny_root, embedding_size=10)  # text 8-d, image 6-d
    model = _model(config, train)
    for role in model.features.roles:
        width = train._dataset.modality_features(model.modality_roles[role]).shape[1]
        block = model.features[role]
        assert block.shape[1] == 10 and block[:, width:].abs().sum() == 0
        assert block[1:, :width].abs().sum(0).min() > 0  # every component kept
    model.set_stage("collab")
    assert torch.isfinite(model.calculate_loss(next(iter(train))))


def test_beam_size_defaults_to_the_largest_cut_off(tiny_root):
    config, train, _, _ = _setup(tiny_root, beam_size=None, topk=[5, 10])
    assert _model(config, train).beam_size == 10
    config, train, _, _ = _setup(tiny_root, beam_size=5, topk=[5, 10])
    with pytest.raises(ValueError, match=r"beam_size = 5 .* topk = \[5, 10\]"):
        _model(config, train)


def test_pre_split_dataset_is_refused_with_what_to_build(tmp_path):
    """Issue 13.7: RecBole's sequential dataset failed with an AttributeError on the MMRec
    split (benchmark files) that amazon-sports carries."""
    from recbole_mm.config import Config
    from recbole_mm.utils import create_dataset

    write_tiny_dataset(tmp_path / "tiny-split", name="tiny-split", benchmark=True)
    options = tiny_config(tmp_path, **SMALL, benchmark_filename=["train", "valid", "test"])
    config = Config(model="CEMG", dataset="tiny-split", config_dict=options)
    with pytest.raises(ValueError, match="pre-split .* --split loo"):
        create_dataset(config)


def test_diversity_loss_keeps_codes_in_use():
    """Codebooks started in a corner of the space: without the diversity term few codes catch
    the data; with it, more codes are used after the same training."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(32, 8, generator=g) * 3
    x = centres[torch.randint(32, (400,), generator=g)] + 0.1 * torch.randn(400, 8, generator=g)
    x = x + 2.0
    usage = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        quantizer = ResidualQuantizer(n_levels=1, codebook_size=32, dim=8, kmeans_init=False)
        optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.05)
        for _ in range(100):
            _, _, loss = quantizer(x)
            div = diversity_loss(quantizer.codebooks, quantizer.residuals(x), temperature=0.1)
            (loss + weight * div).backward()
            optimizer.step()
            optimizer.zero_grad()
        usage[weight] = torch.unique(quantizer.encode(x)).numel()
    assert usage[1.0] >= usage[0.0] + 5  # 21 against 13 codes of 32


def test_diversity_loss_bounds():
    books = torch.eye(4)[None]  # one level, 4 codes
    spread = diversity_loss(books, torch.eye(4)[None].repeat(1, 25, 1), temperature=0.01)
    collapsed = diversity_loss(books, torch.eye(4)[None, :1].repeat(1, 100, 1), temperature=0.01)
    assert spread < 0.01 and collapsed > 0.9


def test_cold_start_evaluation_matches_recbole(trained):
    config, model, trainer, (train, _, test), result = trained
    report = evaluate_cold_start(model, train, test, max_interactions=5, topk=(5,))
    assert report["n_overall"] == len(test._dataset)
    # RecBole's Recall@5 under leave-one-out is Hit@5; its NDCG@5 is ours.
    assert report["overall"]["hit@5"] == pytest.approx(result["recall@5"], abs=1e-4)
    assert report["overall"]["ndcg@5"] == pytest.approx(result["ndcg@5"], abs=1e-4)
    assert 0 <= report["n_cold"] <= report["n_overall"]


def test_cli_end_to_end(tiny_root, tmp_path):
    import yaml

    options = tiny_config(tiny_root, **SMALL, checkpoint_dir=str(tmp_path / "saved"))
    (tmp_path / "cemg.yaml").write_text(yaml.safe_dump(options))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_recbole_mm.py"),
            "--model=CEMG",
            f"--dataset={TINY}",
            f"--config_files={tmp_path / 'cemg.yaml'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "saved").glob("CEMG-tiny-mm-generator.pth"))


def test_rqvae_round_trip_reconstructs_items(tiny_root):
    """decoder(decode(encode(encoder(x)))) approaches x as the tokenizer trains (Eq. 4)."""
    config, train, _, _ = _setup(tiny_root, rq_codebook_size=16, rq_hidden_sizes=[16])
    model = _model(config, train)
    model.set_stage("tokenizer")
    model.prepare_stage("tokenizer", train)
    x = model.tokenizer_input[1:]

    def round_trip_error():
        with torch.no_grad():
            codes = model.quantizer.encode(model.rq_encoder(x))
            return float((model.rq_decoder(model.quantizer.decode(codes)) - x).pow(2).mean())

    before = round_trip_error()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    for _ in range(50):
        loss = model.calculate_loss(None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = round_trip_error()
    assert after < 0.5 * before, (before, after)


def test_a_resumed_generator_keeps_its_codes_until_the_tokenizer_trains_again(tiny_root):
    config, train, _, _ = _setup(tiny_root)
    model = _model(config, train)
    for stage in model.stages:
        model.set_stage(stage)
        model.prepare_stage(stage, train)
    assigned = model.item_codes.clone()
    assert bool(model.codes_assigned)
    with torch.no_grad():  # as a generator checkpoint would hold them
        model.item_codes[1:] = assigned[1:].flip(0)
    model.prepare_stage("generator", train)
    assert torch.equal(model.item_codes[1:], assigned[1:].flip(0))
    model.set_stage("tokenizer")
    assert not bool(model.codes_assigned)
    model.set_stage("generator")
    model.prepare_stage("generator", train)
    assert torch.equal(model.item_codes, assigned)


def test_checkpoints_written_before_the_codes_flag_load(trained):
    config, model, _, (train, _, test), _ = trained
    state = {k: v for k, v in model.state_dict().items() if k != "codes_assigned"}
    other = _model(config, train, seed=3)
    other.load_state_dict(state)  # strict
    assert torch.equal(other.item_codes, model.item_codes) and not bool(other.codes_assigned)
    interaction = next(iter(test))[0]
    with torch.no_grad():
        torch.testing.assert_close(
            other.eval().full_sort_predict(interaction),
            model.eval().full_sort_predict(interaction),
        )
    with pytest.warns(DeprecationWarning, match="use code_report"):
        assert other.tokenization_report is other.code_report
