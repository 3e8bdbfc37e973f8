"""MMGRec on the tiny dataset: stages, Rec-ID assignment, inference against teacher forcing,
configuration errors, and the ablation switches."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits
from recbole_ranking import recbole_hits

from recbole_mm.model.general_recommender.mmgrec import MMGRec, hierarchical_kmeans
from recbole_mm.model.layers.semantic_ids import history_mask
from recbole_mm.smoke import tiny_settings

REPO = Path(__file__).resolve().parents[2]
TINY_MMGREC = tiny_settings(
    "MMGRec",
    n_layers=2,  # the YAML's graph depth (tiny_config's n_layers, 1, is LightGCN's and GTC's)
    inner_size=16,
    dropout_prob=0.0,
)


def _data(tiny_root, **overrides):
    config, train, _, test = tiny_splits(tiny_root, "MMGRec", **{**TINY_MMGREC, **overrides})
    return config, train, test


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return _data(tiny_root)


def _model(config, train, seed=0):
    return seeded_model("MMGRec", config, train, seed)


def _trained_tokenizer(config, train, steps=6):
    """A model whose tokenizer took a few alternating steps, then assigned Rec-IDs."""
    model = _model(config, train)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    batches = iter(train)
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(train)
            batch = next(batches)
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    model.prepare_stage("generator", train)
    model.set_stage("generator")
    return model


def test_tokenizer_alternates_bpr_and_rqvae(tiny):
    config, train, _ = tiny
    model = _model(config, train)
    batch = next(iter(train))
    model.calculate_loss(batch).backward()  # BPR: graph parameters only
    assert model.graph.self_weights[0].weight.grad is not None
    assert model.quantizer.codebooks.grad is None
    model.zero_grad(set_to_none=True)
    model.calculate_loss(batch).backward()  # RQ-VAE: on detached item representations
    assert model.quantizer.codebooks.grad is not None
    assert model.graph.self_weights[0].weight.grad is None


def test_codebooks_start_as_the_authors_unless_switched(tiny_root):
    """Default (the authors' code): uniform in [-1/L, 1/L], untouched by the first RQ-VAE batch,
    and no dead-code re-seeding; rq_kmeans_init / rq_dead_code_reset are our switches."""
    config, train, _ = _data(tiny_root)
    model = _model(config, train)
    assert not model.quantizer.kmeans_init and not model.dead_code_reset
    before = model.quantizer.codebooks.detach().clone()
    assert before.abs().max() <= 1 / model.codebook_size
    batch = next(iter(train))
    model.calculate_loss(batch)  # BPR
    model.calculate_loss(batch)  # RQ-VAE, no optimiser step
    assert torch.equal(model.quantizer.codebooks.detach(), before)

    config, train, _ = _data(tiny_root, rq_kmeans_init=True)
    model = _model(config, train)
    assert not bool(model.quantizer.initialised)
    model.calculate_loss(batch)
    model.calculate_loss(batch)  # k-means on the first RQ-VAE batch
    assert bool(model.quantizer.initialised)
    assert model.quantizer.codebooks.detach().abs().max() > 1 / model.codebook_size


def test_stages_switch_trainable_parameters(tiny):
    config, train, _ = tiny
    model = _model(config, train)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "quantizer.codebooks" in trainable and not any(
        n.startswith("encoder") for n in trainable
    )
    model.set_stage("generator")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bos" in trainable and any(n.startswith("decoder") for n in trainable)
    assert "quantizer.codebooks" not in trainable and "item_embedding.weight" not in trainable
    with pytest.raises(ValueError, match="stage 'nope'"):
        model.set_stage("nope")


def test_rec_ids_unique_with_popularity_token(tiny):
    config, train, _ = tiny
    model = _trained_tokenizer(config, train)
    rec_ids = model.item_codes
    assert (rec_ids[0] == -1).all() and (rec_ids[1:] >= 0).all()
    assert torch.unique(rec_ids[1:], dim=0).shape[0] == model.n_items - 1
    report = model.code_report
    assert report["after"]["collision_rate"] == 0.0
    assert len(report["before"]["usage_per_level"]) == 2
    # Within a colliding group the popularity token ranks items by training interactions.
    codes = rec_ids[1:, :-1]
    pop = model.popularity[1:]
    for group in torch.unique(codes, dim=0):
        members = (codes == group).all(1).nonzero().squeeze(1)
        ranked = members[rec_ids[1:][members, -1].argsort()]
        assert (pop[ranked][:-1] >= pop[ranked][1:]).all()
    # The encoder input and user vectors now come from the graph.
    user_repr, item_repr = model.graph_forward()
    torch.testing.assert_close(model.item_embedding.weight[1:], item_repr[1:])
    torch.testing.assert_close(model.user_vectors, user_repr)


def test_generator_loss_excludes_target_from_input(tiny, monkeypatch):
    config, train, _ = tiny
    model = _trained_tokenizer(config, train)
    batch = next(iter(train))
    seen = {}

    def spy(user, history, item):
        seen["history"], seen["item"] = history, item
        return torch.zeros(len(user), 3, requires_grad=True)

    monkeypatch.setattr(model, "_token_log_probs", spy)
    model.calculate_loss(batch)
    assert not (seen["history"] == seen["item"].unsqueeze(1)).any()
    assert seen["history"].shape[1] <= config["history_length"]


def test_beam_search_matches_teacher_forcing_and_excludes_training_items(tiny):
    config, train, test = tiny
    model = _trained_tokenizer(config, train).eval()
    user = next(iter(test))[0][model.USER_ID][:6]
    n_real = model.n_items - 1
    with torch.no_grad():
        items, scores = model.generate(user, beam_size=n_real + 3)  # more beams than items
        history = model.train_history[user]
        for b in range(len(user)):
            found = items[b][items[b] >= 0]
            allowed = set(range(1, model.n_items)) - set(history[b].tolist())
            assert set(found.tolist()) == allowed  # exhaustive: every allowed item, once
            assert (scores[b][items[b] < 0] == float("-inf")).all()
            # Beam scores equal the teacher-forced sequence log-probabilities (cached path).
            inter = {model.USER_ID: user[b].repeat(len(found)), model.ITEM_ID: found}
            torch.testing.assert_close(
                scores[b][: len(found)], model.predict(inter), rtol=1e-4, atol=1e-4
            )
        matrix = model.full_sort_predict({model.USER_ID: user})
    assert matrix.shape == (len(user), model.n_items)
    assert (matrix.isfinite().sum(1) == config["topk"][0]).all()
    assert not matrix.gather(1, model.train_history[user]).isfinite().any()


def _test_phase(model, users, best):
    """RecBole's test-phase history as its loader holds it (``uid2history_item``) and the batch's
    ``history_index``: training items, plus two "validation" items per batch user, here the
    user's two best beams under the training-only exclusion."""
    per_user = np.array([None] * model.n_users)
    for user in range(model.n_users):
        items = set(model.train_history[user].tolist()) - {0}
        if user in users.tolist():
            items |= set(best[users.tolist().index(user), :2].tolist())
        per_user[user] = torch.tensor(sorted(items), dtype=torch.long)
    rows = torch.cat([torch.full_like(per_user[u], r) for r, u in enumerate(users.tolist())])
    items = torch.cat([per_user[u] for u in users.tolist()])
    return SimpleNamespace(uid2history_item=per_user), (rows, items)


@pytest.mark.parametrize("exclude_history", [True, False])
def test_no_item_outside_the_beams_counts_as_a_hit_at_test(tiny, exclude_history):
    """Issue 12.6: at test RecBole masks training and validation items. Beams spent on
    validation items were masked after full_sort_predict, and RecBole's topk filled the top-K
    with -inf items, counting those that are positives. Here every unmasked item outside the
    beams is a positive: none may count."""
    config, train, test = tiny
    model = _model(config, train)
    model.set_stage("generator")
    model.eval()
    interaction = next(iter(test))[0]
    users = interaction[model.USER_ID]
    k = max(config["topk"])
    with torch.no_grad():
        best, _ = model.generate(users)  # training items excluded
    loader, history_index = _test_phase(model, users, best)
    masked = torch.zeros(len(users), model.n_items, dtype=torch.bool)
    masked[history_index] = True

    model.exclude_history = exclude_history
    model.prepare_evaluation(loader)
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    assert ((scores.isfinite() & ~masked).sum(1) >= k).all()
    outside = ~scores.isfinite() & ~masked
    outside[:, 0] = False
    positive_u, positive_i = outside.nonzero(as_tuple=True)
    batch = (interaction, history_index, positive_u, positive_i)
    assert recbole_hits(config, model, batch).sum() == 0
    if exclude_history:
        # Without the evaluation's mask (only training items excluded, as before the fix)
        # the same evaluation counts items outside the beams.
        model.prepare_evaluation(None)
        assert recbole_hits(config, model, batch).sum() > 0


def test_prepare_evaluation_masks_what_recbole_masks(tiny):
    config, train, test = tiny
    model = _model(config, train)
    interaction, (history_u, history_i), _, _ = next(iter(test))
    users = interaction[model.USER_ID]
    expected = torch.zeros(len(users), model.n_items, dtype=torch.bool)
    expected[history_u, history_i] = True
    training = history_mask(model.train_history[users], n_items=model.n_items)
    assert (expected & ~training).any()  # the test loader also masks validation items
    model.prepare_evaluation(test)
    assert torch.equal(model._masked(users), expected)
    model.prepare_evaluation(None)
    assert torch.equal(model._masked(users), training)


def test_trainer_evaluation_masks_what_the_evaluated_loader_masks(tiny):
    """MultiStageTrainer.evaluate hands its loader to prepare_evaluation before ranking."""
    from recbole_mm.trainer import MultiStageTrainer

    config, train, test = tiny
    model = _trained_tokenizer(config, train, steps=1)
    trainer = MultiStageTrainer(config, model)
    trainer._final_trained = True
    interaction, (history_u, history_i), _, _ = next(iter(test))
    users = interaction[model.USER_ID]
    expected = torch.zeros(len(users), model.n_items, dtype=torch.bool)
    expected[history_u, history_i] = True
    trainer.evaluate(test, load_best_model=False)
    assert torch.equal(model._masked(users), expected)


def test_hierarchical_kmeans_codes_split_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(10, 2, generator=g) * 0.01, torch.randn(10, 2, generator=g) + 5])
    torch.manual_seed(0)
    codes = hierarchical_kmeans(x, n_levels=2, k=2)
    assert codes.shape == (20, 2)
    assert len(set(codes[:10, 0].tolist())) == 1 and len(set(codes[10:, 0].tolist())) == 1
    assert codes[0, 0] != codes[10, 0]


@pytest.mark.parametrize(
    "switches",
    [
        {"rq_input": "features", "encoder_input": "free"},
        {"rec_id_method": "hkmeans", "collision_token": "random"},
        {"encoder_position": "sinusoidal"},
        {"encoder_position": "none"},
    ],
)
def test_ablations_run(tiny_root, switches):
    config, train, test = _data(tiny_root, **switches)
    model = _trained_tokenizer(config, train, steps=2)
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    assert torch.isfinite(loss)
    if switches.get("encoder_input") == "free":
        assert model.item_embedding.weight.requires_grad
    with torch.no_grad():
        scores = model.eval().full_sort_predict(next(iter(test))[0])
    assert scores.isfinite().any(1).all()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("beam_size", 2, "beam_size = 2"),
        ("encoder_position", "rope", "encoder_position = 'rope'"),
        ("rq_codebook_size", 0, "rq_codebook_size = 0"),
    ],
)
def test_bad_config_is_refused(tiny_root, key, value, match):
    config, train, _ = _data(tiny_root, **{key: value})
    with pytest.raises(ValueError, match=match):
        MMGRec(config, train._dataset)


def test_capacity_and_collision_group_limits(tiny_root, monkeypatch):
    config, train, _ = _data(tiny_root, popularity_vocab_size=2, rq_codebook_size=2)
    with pytest.raises(ValueError, match="give 8 Rec-IDs for 30 items"):
        MMGRec(config, train._dataset)
    config, train, _ = _data(tiny_root, popularity_vocab_size=2)
    model = _model(config, train)
    monkeypatch.setattr(
        model.quantizer, "encode", lambda z: torch.zeros(len(z), 2, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="30 items share one semantic code tuple"):
        model.prepare_stage("generator", train)


def test_prepare_stage_is_idempotent_until_the_tokenizer_retrains(tiny):
    config, train, _ = tiny
    model = _trained_tokenizer(config, train)
    rec_ids = model.item_codes.clone()
    with torch.no_grad():
        model.item_embedding.weight.add_(1.0)  # as if fine-tuned by the generator
    model.prepare_stage("generator", train)  # a resumed generator keeps its Rec-IDs and inputs
    assert torch.equal(model.item_codes, rec_ids)
    assert (model.item_embedding.weight[1:] != model.graph_forward()[1][1:]).all()
    model.set_stage("tokenizer")
    model.set_stage("generator")
    model.prepare_stage("generator", train)  # retrained tokenizer: assigned again
    torch.testing.assert_close(model.item_embedding.weight[1:], model.graph_forward()[1][1:])


def _stage_config(tiny_root, folder, **overrides):
    return tiny_config(
        tiny_root,
        **{
            **TINY_MMGREC,
            "checkpoint_dir": str(folder),
            "stage_epochs": {"tokenizer": 1, "generator": 1},
            "eval_step": 1,
            **overrides,
        },
    )


def test_each_stage_runs_alone_and_resumes_from_its_checkpoint(tiny_root, run_in_tmp):
    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm
    from recbole_mm.trainer.multistage import stage_checkpoint_path

    folder = run_in_tmp / "saved"
    first = run_recbole_mm(
        "MMGRec", TINY, config_dict=_stage_config(tiny_root, folder, train_stage="tokenizer")
    )
    assert first["test_result"] is None  # stopped before the generator
    tokenizer = stage_checkpoint_path(str(folder), "MMGRec", TINY, "tokenizer")
    state = torch.load(tokenizer, weights_only=True)
    assert state["stage"] == "tokenizer" and not bool(state["state_dict"]["codes_assigned"])

    second = run_recbole_mm(
        "MMGRec",
        TINY,
        config_dict=_stage_config(
            tiny_root, folder, train_stage="generator", pre_model_path=tokenizer
        ),
    )
    assert second["test_result"] is not None
    generator = stage_checkpoint_path(str(folder), "MMGRec", TINY, "generator")
    trained = torch.load(generator, weights_only=True)["state_dict"]
    # The generator's Rec-IDs come from the tokenizer checkpoint's weights.
    _, model, _, _, _, test = load_data_and_model(tokenizer)
    model.prepare_stage("generator")
    assert torch.equal(model.item_codes, trained["item_codes"])
    torch.testing.assert_close(model.quantizer.codebooks, trained["quantizer.codebooks"])

    # Resuming the generator keeps its Rec-IDs and trained weights, and evaluates.
    third = run_recbole_mm(
        "MMGRec",
        TINY,
        config_dict=_stage_config(
            tiny_root,
            folder,
            train_stage="generator",
            pre_model_path=generator,
            stage_epochs={"tokenizer": 1, "generator": 2},
        ),
    )
    assert third["test_result"] is not None
    _, reloaded, _, _, _, test = load_data_and_model(third["checkpoint"])
    assert torch.equal(reloaded.item_codes, trained["item_codes"])
    interaction = next(iter(test))[0]
    with torch.no_grad():
        scores = reloaded.eval().full_sort_predict(interaction)
    assert scores.isfinite().sum(1).eq(reloaded.beam_size).all()


@pytest.mark.slow
def test_end_to_end_through_the_cli(tiny_root, run_in_tmp):
    import subprocess
    import sys

    import yaml

    settings = _stage_config(tiny_root, run_in_tmp / "saved", state="INFO")
    (run_in_tmp / "tiny.yaml").write_text(yaml.safe_dump(settings))
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_recbole_mm.py"),
            "--model=MMGRec",
            f"--dataset={TINY}",
            "--config_files=tiny.yaml",
        ],
        cwd=run_in_tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "MMGRec item codes: collision rate" in output
    assert "test result" in output.lower()
    for stage in ("tokenizer", "generator"):
        assert (run_in_tmp / "saved" / f"MMGRec-{TINY}-{stage}.pth").is_file()


def test_dead_codes_are_reseeded_at_residuals(tiny):
    config, train, _ = tiny
    model = _model(config, train)
    z = torch.randn(10, 4)
    with torch.no_grad():
        model.quantizer.codebooks.fill_(0.0)
        model.quantizer.codebooks[:, 3] = 1e6  # never chosen
    codes = model.quantizer.encode(z)
    assert not (codes == 3).any()
    model._reseed_dead_codes(z, codes)
    residuals = model.quantizer.residuals(z)
    for level in range(2):
        new = model.quantizer.codebooks[level, 3]
        assert (residuals[level] - new).abs().sum(1).min() < 1e-6


def test_checkpoints_with_the_old_rec_id_buffer_names_load(tiny):
    """Checkpoints written before the semantic-id base hold ``rec_ids`` / ``rec_ids_assigned``;
    they load (strictly) into ``item_codes`` / ``codes_assigned`` and rank as before."""
    config, train, test = tiny
    model = _trained_tokenizer(config, train).eval()
    renamed = {"item_codes": "rec_ids", "codes_assigned": "rec_ids_assigned"}
    old = {renamed.get(k, k): v for k, v in model.state_dict().items()}
    assert "rec_ids" in old and "item_codes" not in old
    fresh = _model(config, train, seed=1)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.item_codes, model.item_codes) and bool(fresh.codes_assigned)
    interaction = next(iter(test))[0]
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.eval().full_sort_predict(interaction), model.full_sort_predict(interaction)
        )


def test_old_rec_id_names_still_work_with_a_deprecation_warning(tiny):
    config, train, _ = tiny
    model = _model(config, train)
    with pytest.warns(DeprecationWarning, match=r"assign_rec_ids\(\) is deprecated"):
        report = model.assign_rec_ids()
    assert report["before_popularity_token"] == model.code_report["before"]
    with pytest.warns(DeprecationWarning, match="use item_codes"):
        assert model.rec_ids is model.item_codes
    with pytest.warns(DeprecationWarning, match="use codes_assigned"):
        assert bool(model.rec_ids_assigned)
    with pytest.warns(DeprecationWarning, match="use code_report"):
        assert model.rec_id_report["after"] == model.code_report["after"]
