"""GTC on the tiny dataset: trained parts, evaluation representations, modality counts,
ablation switches, configuration errors, and an end-to-end run with checkpoint reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, seeded_model, tiny_config, tiny_splits, write_tiny_dataset

from recbole_mm.data.features import save_modality
from recbole_mm.model.general_recommender.gtc import GTC, modality_balance_score
from recbole_mm.properties import tuned_file

TINY_GTC = {"diffusion_steps": 10, "gtc_denoiser_hidden_size": 8, "train_batch_size": 128}

ABLATIONS = {
    "base": {"gtc_denoise": False, "gtc_alignment": "none", "gtc_fusion": "concat"},
    "base_dn": {"gtc_alignment": "none", "gtc_fusion": "concat"},
    "base_tc": {"gtc_denoise": False, "gtc_fusion": "concat"},
    "wo_tc": {"gtc_alignment": "pairwise"},
    "inter_only": {"modality_roles": {}},
    "wo_image": {"modality_roles": {"text": "text"}, "gtc_alignment": "pairwise"},
    "ddpm_eval": {"gtc_eval_sampler": "ddpm"},
    "noise_start": {"gtc_sample_start": "noise", "gtc_train_sample_steps": 2},
    "content_start": {"gtc_sample_start": "content"},
    # Every invention of ours switched on, as ml-100k-mm's validated settings have them.
    "tuned": {
        "gtc_prediction": "x0",
        "gtc_standardize": True,
        "gtc_clip_x0": True,
        "gtc_denoiser_losses": "gen",
        "gtc_gen_detach_content": True,
        "gtc_tc_normalize": True,
        "gtc_tc_temperature": 0.2,
        "gtc_fusion_gate": "two_way",
        "gtc_fusion_offset": 4.0,
        "gtc_fusion_scale": "match",
        "gtc_center_content": True,
        "gtc_sample_start": "content",
    },
}


def _data(root, name=TINY, **overrides):
    config, train, _, test = tiny_splits(root, "GTC", name=name, **{**TINY_GTC, **overrides})
    return config, train, test


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return _data(tiny_root)


def _model(config, train, seed=0):
    return seeded_model("GTC", config, train, seed)


def _step(model, train, lr=0.05):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.zero_grad()
    model.calculate_loss(next(iter(train))).backward()
    optimizer.step()


def test_denoisers_are_trained_and_saved(tiny):
    config, train, _ = tiny
    model = _model(config, train)
    names = {n for n, _ in model.named_parameters()}
    assert set(model.modalities) == {"text", "image"}
    for modality in model.modalities:
        params = [n for n in names if n.startswith(f"denoisers.{modality}.")]
        assert params, modality
        assert all(n in model.state_dict() for n in params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, train)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("denoisers.text.") for n in changed)
    # With the paper's noise start the generation never reads C_0: the projections learn
    # through L_GEN (Eq. 4 is not detached from C_0 in the paper).
    assert any(n.startswith("projections.image.") for n in changed)
    # Eq. 10's softmax over the node's one similarity is 1 whatever tau is: tau gets no gradient.
    assert "log_fusion_temperature" not in changed
    # The schedule is rebuilt from the configuration, never read from a checkpoint.
    assert not any(k.startswith("schedule.") for k in model.state_dict())


def test_evaluation_is_seeded_cached_and_recomputed_after_training(tiny):
    config, train, test = tiny
    interaction = next(iter(test))[0]
    model = _model(config, train).eval()
    with torch.no_grad():
        first = model.full_sort_predict(interaction)
        assert model._eval_cache is not None
        assert torch.equal(model.full_sort_predict(interaction), first)
        model.eval()  # a new evaluation pass recomputes, with the same seeded noise
        assert model._eval_cache is None
        assert torch.equal(model.full_sort_predict(interaction), first)
    _step(model, train)
    model.eval()
    with torch.no_grad():
        after = model.full_sort_predict(interaction)
    assert not torch.allclose(after, first)
    # A model with another training history but the same weights scores identically.
    other = _model(config, train, seed=5)
    other.eval()
    with torch.no_grad():
        other.full_sort_predict(interaction)  # fills a cache that loading must drop
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(other.full_sort_predict(interaction), after)
    # Sec. 4.5's score of the last evaluation pass, over all users.
    with torch.no_grad():
        s, _, views = model.evaluation_views()
        users = slice(0, model.n_users)
        expected = modality_balance_score(
            model._fuse(s, views)[users], [s[users], *(v[users] for v in views)]
        )
    assert model.balance_scores[-1] == pytest.approx(expected)


def test_evaluation_views_with_the_bound_denoiser_equal_the_plain_ones(tiny):
    """Evaluation (no autograd) samples through MLPUNetDenoiser.bind: the same views as the
    plain calls of training mode's closure, from the same seeded noise."""
    config, train, _ = tiny
    model = _model(config, train).eval()
    with torch.no_grad():
        fast = model.evaluation_views()[2]
    with torch.enable_grad():
        plain = model.evaluation_views()[2]
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("start", ["noise", "content"])
def test_only_the_content_start_reads_an_items_features_at_evaluation(tiny_root, start):
    """With the paper's noise start the generated views are a function of S and the sampler's
    noise: replacing every item's features leaves the scores exactly as they were, so the
    content acts only through the weights it trained (L_GEN), never through an item's own
    features at inference. The content start (ours) reads them."""
    config, train, test = _data(tiny_root, gtc_sample_start=start)
    model = _model(config, train).eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        before = model.full_sort_predict(interaction)
        for name in model.modalities:
            model.features[name] = model.features[name].flip(0)  # another item's row
        model.eval()  # drop the cached representations
        after = model.full_sort_predict(interaction)
    assert torch.equal(before, after) == (start == "noise")


def test_modality_balance_score_by_hand():
    """1 - (max_m cos - min_m cos), averaged over rows: 1 when every view agrees, -1 when the
    fused row points along one view and against another."""
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert modality_balance_score(x, [x, 3 * x]) == pytest.approx(1.0)
    assert modality_balance_score(x, [x, -x]) == pytest.approx(-1.0)
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # row 0: cosines 1 and 0; row 1: 1 and 1
    assert modality_balance_score(x, [x, y]) == pytest.approx(0.5)


def test_ddpm_and_ddim_eval_samplers_differ_but_are_each_deterministic(tiny_root, tiny):
    _, train, test = tiny
    interaction = next(iter(test))[0]
    ddim_config, _, _ = _data(tiny_root, gtc_eval_sampler="ddim")
    ddim = _model(ddim_config, train).eval()
    ddpm_config, _, _ = _data(tiny_root, gtc_eval_sampler="ddpm")  # the default: Eq. 5
    ddpm = _model(ddpm_config, train).eval()
    with torch.no_grad():
        a = ddpm.full_sort_predict(interaction)
        ddpm.eval()
        assert torch.equal(ddpm.full_sort_predict(interaction), a)
        assert not torch.allclose(a, ddim.full_sort_predict(interaction))


def _loss_terms(model, batch) -> tuple[float, float]:
    """``(w1 L_GEN, w2 L_CON)`` of one batch at weights 1, from the same random draws."""
    weights = model.gen_weight, model.tc_weight
    losses = {}
    for w1, w2 in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        model.gen_weight, model.tc_weight = w1, w2
        torch.manual_seed(0)
        losses[w1, w2] = float(model.calculate_loss(batch))
    model.gen_weight, model.tc_weight = weights
    base = losses[0.0, 0.0]
    return losses[1.0, 0.0] - base, losses[0.0, 1.0] - base


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_ablation_switches_change_what_they_name(tiny_root, variant):
    """Each variant trains and scores, and has the parts (and only the parts) it names."""
    config, train, test = _data(tiny_root, **ABLATIONS[variant])
    model = _model(config, train)
    batch = next(iter(train))
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    gen, con = _loss_terms(model, batch)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(next(iter(test))[0])
    assert torch.isfinite(scores).all()
    denoise = config["gtc_denoise"] and bool(model.modalities)
    assert bool(model.denoisers) == denoise
    assert (gen != 0) == denoise  # L_GEN exists exactly when there is a diffusion
    aligned = config["gtc_alignment"] != "none" and bool(model.modalities)
    assert (abs(con) > 1e-9) == aligned  # L_CON exists exactly when there is an alignment
    width = model._representations().shape[1]
    d = config["embedding_size"]
    assert width == (d * (1 + len(model.modalities)) if config["gtc_fusion"] == "concat" else d)
    if variant == "inter_only":
        # No content: GTC's score is LightGCN's, the dot product of the propagated ID rows.
        assert not model.projections
        ids = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        s = model.propagation(model.adjacency, ids)
        user = next(iter(test))[0][model.USER_ID]
        torch.testing.assert_close(scores, s[user] @ s[model.n_users :].T)
    if variant == "wo_image":
        assert model.modalities == ["text"]
    if variant == "wo_tc":
        default_config, _, _ = _data(tiny_root)
        _, tc_con = _loss_terms(_model(default_config, train), batch)
        assert con != pytest.approx(tc_con)  # pairwise InfoNCE, not the TC estimate


def test_tuned_settings_file_holds_only_departures_and_the_defaults_are_the_papers():
    """properties/model/GTC/ml-100k-mm.yaml switches on our inventions; without it (or with
    tuned_settings False) GTC on ml-100k-mm runs the paper's method."""
    from recbole_mm.config import Config

    tuned = Config(model="GTC", dataset="ml-100k-mm", overrides={})
    paper = Config(model="GTC", dataset="ml-100k-mm", overrides={"tuned_settings": False})
    assert tuned.tuned_file == str(tuned_file("GTC", "ml-100k-mm"))
    assert paper.tuned_file is None
    assert (paper["gtc_fusion_gate"], paper["gtc_prediction"], paper["reg_weight"]) == (
        "softmax",
        "eps",
        0.01,
    )
    assert (tuned["gtc_fusion_gate"], tuned["gtc_prediction"], tuned["reg_weight"]) == (
        "two_way",
        "x0",
        1e-5,
    )
    # A user's own setting still wins over the tuned file.
    mine = Config(model="GTC", dataset="ml-100k-mm", overrides={"gtc_prediction": "eps"})
    assert mine["gtc_prediction"] == "eps" and mine["gtc_fusion_gate"] == "two_way"


def test_three_content_modalities(tmp_path):
    write_tiny_dataset(tmp_path / "tiny3", name="tiny3")
    rng = np.random.default_rng(3)
    save_modality(
        tmp_path / "tiny3",
        "tiny3",
        "audio",
        tokens=[f"i{i}" for i in range(1, 31)],
        features=rng.normal(size=(30, 5)).astype(np.float32),
    )
    mods = {"text": {"dim": 8}, "image": {"dim": 6}, "audio": {"dim": 5}}
    config, train, _ = _data(tmp_path, name="tiny3", modalities=mods)
    model = _model(config, train)
    assert model.modalities == ["text", "image", "audio"]
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.denoisers["audio"].out.weight.grad is not None


@pytest.mark.parametrize("losses", ["gen", "all"])
def test_what_trains_the_denoisers(tiny_root, losses):
    """'gen': only L_GEN reaches the denoisers; BPR and L_CON still reach the embeddings and
    the projections through the generated views. 'all': they reach the denoisers too."""
    config, train, _ = _data(
        tiny_root, gtc_denoiser_losses=losses, gtc_prediction="x0", gtc_sample_start="content"
    )
    model = _model(config, train)
    model.gen_weight = 0.0  # BPR + L_CON + L2 only
    model.calculate_loss(next(iter(train))).backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("denoisers.")]
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached == (losses == "all")
    assert model.projections["text"].weight.grad.abs().sum() > 0
    assert model.user_embedding.weight.grad.abs().sum() > 0
    model.zero_grad()
    model.gen_weight = 1.0
    model.calculate_loss(next(iter(train))).backward()
    assert model.denoisers["text"].out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("standardize", [True, False])
def test_x0_prediction_with_an_oracle_denoiser_recovers_the_content(tiny_root, standardize):
    """An x0 denoiser that outputs the (scaled) ``C_0`` has L_GEN = 0, and one DDIM step from
    ``C_T`` generates ``C_0`` itself in the model's own scale."""
    config, train, _ = _data(tiny_root, gtc_prediction="x0", gtc_standardize=standardize)
    model = _model(config, train)
    _, contents = model._encode()
    for name, c0 in zip(model.modalities, contents):
        scale, _ = model._diffusion_stats(c0)
        model.denoisers[name].forward = lambda x, t, s, target=c0 / scale: target[: x.shape[0]]
    s, contents = model._encode()
    stats = [model._diffusion_stats(c) for c in contents]
    views = model._content_views(s, contents, stats, sampler="ddim", n_steps=1)
    for view, c0 in zip(views, contents):
        torch.testing.assert_close(view, c0, rtol=1e-5, atol=1e-6)
    if standardize:  # the diffusion space has unit RMS per column over the real nodes
        scaled = (contents[0] / stats[0][0])[torch.arange(len(contents[0])) != model.n_users]
        torch.testing.assert_close(scaled.pow(2).mean(0), torch.ones(scaled.shape[1]))


def test_training_and_evaluation_share_one_diffusion_scale_and_clip(tiny_root):
    """The scale and the x0 clip range come from every real node (padding item excluded) in
    training and in evaluation, not from the batch's nodes in one and all rows in the other."""
    config, train, _ = _data(tiny_root, gtc_standardize=True, gtc_clip_x0=True)
    model = _model(config, train)
    seen = {}
    generate = model._generate

    def spy(name, s, c0, stats, **kwargs):
        seen.setdefault(model.training, []).append(stats)
        return generate(name, s, c0, stats, **kwargs)

    model._generate = spy
    model.train()
    model.calculate_loss(next(iter(train)))
    model.eval()
    with torch.no_grad():
        model.evaluation_views()
    for (train_scale, train_clip), (eval_scale, eval_clip) in zip(seen[True], seen[False]):
        torch.testing.assert_close(train_scale, eval_scale)
        torch.testing.assert_close(train_clip, eval_clip)
    # The padding item's row (all zeros before any training) does not enter the statistics.
    _, contents = model._encode()
    real = contents[0][torch.arange(len(contents[0])) != model.n_users].detach()
    torch.testing.assert_close(seen[False][0][0], real.pow(2).mean(0).sqrt())


def test_x0_loss_is_zero_for_an_oracle_and_positive_otherwise(tiny_root):
    config, train, _ = _data(tiny_root, gtc_prediction="x0", gtc_alignment="none")
    model = _model(config, train)
    batch = next(iter(train))

    def gen_term():
        losses = []
        for weight in (1.0, 0.0):  # the same random draws, with and without w1 L_GEN
            model.gen_weight = weight
            torch.manual_seed(0)
            losses.append(model.calculate_loss(batch))
        return (losses[0] - losses[1]).item()

    assert gen_term() > 0  # an untrained denoiser
    # An oracle that outputs the batch's scaled C_0, built as calculate_loss builds it.
    s, contents = model._encode()
    user, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    nodes = torch.unique(torch.cat([user, pos + model.n_users, neg + model.n_users]))
    for name, c0 in zip(model.modalities, contents):
        target = (c0[nodes] / model._diffusion_stats(c0)[0]).detach()
        model.denoisers[name].forward = lambda x, t, s, target=target: target
    assert gen_term() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gtc_eval_sampler": "euler"}, "gtc_eval_sampler = 'euler'"),
        ({"diffusion_steps": 0}, "diffusion_steps = 0"),
        ({"gtc_train_sample_steps": 11}, "gtc_train_sample_steps = 11"),
        ({"gtc_alignment": "clip"}, "gtc_alignment = 'clip'"),
        ({"gtc_prediction": "v"}, "gtc_prediction = 'v'"),
        ({"modality_roles": {"sound": "audio"}}, "modality_roles\\['sound'\\] = 'audio'"),
    ],
)
def test_bad_configuration_names_key_and_value(tiny, tiny_root, overrides, message):
    config, train, _ = _data(tiny_root, **overrides)
    with pytest.raises(ValueError, match=message):
        GTC(config, train._dataset)


def test_wrong_feature_dimension_names_the_key(tiny_root):
    with pytest.raises(ValueError, match=r"modalities.text.dim = 9"):
        _data(tiny_root, modalities={"text": {"dim": 9}, "image": {"dim": 6}})


@pytest.mark.slow
def test_end_to_end_reloads_best_checkpoint_with_same_test_metrics(tiny_root, run_in_tmp):
    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    settings = tiny_config(tiny_root, **TINY_GTC, epochs=2, eval_step=1)
    result = run_recbole_mm(model="GTC", dataset=TINY, config_dict=settings, saved=True)
    assert result["checkpoint"] and result["test_result"]
    config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    from recbole.trainer import Trainer

    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))


def test_paper_gate_adds_the_whole_fused_content_whatever_tau(tiny):
    """Eq. 10 as printed: the softmax over one similarity is 1, so S_bar = S + C_f."""
    config, train, _ = tiny
    model = _model(config, train)
    assert model.fusion_gate == "softmax" and not hasattr(model, "fusion_offset")
    s, contents = model._encode()
    views = [torch.randn_like(c) for c in contents]
    cf = views[0] * views[1]
    for log_tau in (-3.0, 0.0, 3.0):
        with torch.no_grad():
            model.log_fusion_temperature.fill_(log_tau)
        torch.testing.assert_close(model._fuse(s, views), s + cf)


def test_two_way_gate_can_close_but_does_not_isolate_s(tiny_root):
    """The two-way gate's 'no content' logit switches C_f off for every node; S still learns
    from L_GEN (the denoisers are conditioned on S) and L_CON (S is one of its views), so a
    closed gate does not reduce GTC to its interaction-only form."""
    config, train, _ = _data(tiny_root, gtc_fusion_gate="two_way")
    model = _model(config, train)
    s, contents = model._encode()
    views = [torch.randn_like(c) for c in contents]
    assert not torch.allclose(model._fuse(s, views), s)
    with torch.no_grad():
        model.fusion_offset.fill_(1e4)
    torch.testing.assert_close(model._fuse(s, views), s)
    batch = next(iter(train))
    grads = []
    for w1, w2 in ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0)):
        model.zero_grad()
        model.gen_weight, model.tc_weight = w1, w2
        torch.manual_seed(0)
        model.calculate_loss(batch).backward()
        grads.append(model.user_embedding.weight.grad.clone())
    assert not torch.allclose(grads[1], grads[0])  # L_CON reaches S
    assert not torch.allclose(grads[2], grads[0])  # L_GEN reaches S


def test_detached_content_leaves_the_encoders_no_path_from_a_noise_start(tiny_root):
    """gtc_gen_detach_content with the paper's noise start: the generated views never read
    C_0, so nothing trains the content projections (why the switch is off by default)."""
    config, train, _ = _data(tiny_root, gtc_gen_detach_content=True)
    model = _model(config, train)
    model.calculate_loss(next(iter(train))).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.projections.parameters())


def test_matched_fusion_scale_gives_the_content_the_norm_of_s(tiny):
    """gtc_fusion_scale 'match': S_f = alpha ||S|| C_f / ||C_f||, whatever the content's scale."""
    config, train, _ = tiny
    model = _model(config, train)
    model.fusion_scale = "match"
    s, contents = model._encode()
    views = [1000 * torch.randn_like(c) for c in contents]
    fused = model._fuse(s, views)
    torch.testing.assert_close((fused - s).norm(dim=-1), s.norm(dim=-1))  # alpha = 1 here
    model.fusion_scale = "raw"
    assert (model._fuse(s, views) - s).norm(dim=-1).mean() > 100 * s.norm(dim=-1).mean()


def test_centred_content_shares_no_direction_across_items_or_users(tiny):
    """gtc_center_content: a direction common to every item's content (here a large offset of
    the features) leaves C_0 with zero mean over the real items and over the users; without
    it, every item's content points the same way and Eq. 10 would add one vector to all."""
    config, train, _ = tiny
    model = _model(config, train)
    with torch.no_grad():
        for name in model.modalities:
            model.features[name] = model.features[name] + 50.0
    n_users = model.n_users
    for centre in (True, False):
        model.center_content = centre
        _, contents = model._encode()
        for c in contents:
            items, users = c[n_users + 1 :], c[:n_users]
            mean_cosine = torch.nn.functional.cosine_similarity(items, items.mean(0)[None]).mean()
            if centre:
                torch.testing.assert_close(items.mean(0), torch.zeros_like(items[0]))
                torch.testing.assert_close(users.mean(0), torch.zeros_like(users[0]))
                assert mean_cosine < 0.5
            else:
                assert mean_cosine > 0.9


def test_fusion_offset_sets_the_initial_gate(tiny_root):
    """gtc_fusion_offset: the gate starts at sigmoid(cos / tau - offset) for every node."""
    config, train, _, _ = tiny_splits(
        tiny_root, "GTC", gtc_fusion_gate="two_way", gtc_fusion_scale="match", gtc_fusion_offset=4.0
    )
    model = seeded_model("GTC", config, train)
    assert float(model.fusion_offset) == 4.0
    s, contents = model._encode()
    fused = model._fuse(s, contents)
    alpha = (fused - s).norm(dim=-1) / s.norm(dim=-1).clamp(min=1e-12)  # match: ||S_f|| = a ||S||
    assert alpha.max() < torch.sigmoid(torch.tensor(1.0 - 4.0)) + 1e-6


def test_mean_fusion_scale_gives_every_node_the_mean_norm_of_s(tiny_root):
    """gtc_fusion_scale 'mean': ||S_f|| = alpha * mean ||S|| for every node, in training (batch
    nodes, with the mean of every node) and evaluation alike; short S (rare items) then get the
    same content as long ones."""
    config, train, _ = _data(tiny_root, gtc_fusion_gate="two_way")
    model = _model(config, train)
    model.fusion_scale = "mean"
    s, contents = model._encode()
    views = [1000 * torch.randn_like(c) for c in contents]
    cf = views[0]
    for view in views[1:]:
        cf = cf * view
    cosine = torch.nn.functional.cosine_similarity(s, cf, dim=-1)
    alpha = torch.sigmoid(cosine / model.log_fusion_temperature.exp() - model.fusion_offset)
    real = torch.ones(s.shape[0], dtype=torch.bool)
    real[model.n_users] = False
    mean_norm = s[real].norm(dim=-1).mean()
    fused = model._fuse(s, views)
    torch.testing.assert_close((fused - s).norm(dim=-1), alpha * mean_norm)
    batch = torch.tensor([0, 3, model.n_users + 2])
    fused_batch = model._fuse(s[batch], [v[batch] for v in views], s_mean_norm=mean_norm)
    torch.testing.assert_close(fused_batch, fused[batch])


def _benchmark_script(name):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(folder))  # gtc_trace imports gtc_diagnose as a sibling script
    try:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


@pytest.mark.parametrize("gate", ["softmax", "two_way"])
def test_diagnosis_scripts_report_the_fused_content(tiny_root, gate):
    """gtc_diagnose's report: C_f's norm is that of the fused content added to S, and the
    scores' correlation with S's scores is below 1 when the content adds something;
    gtc_trace's gate is 1 for Eq. 10 as printed."""
    config, train, _ = _data(tiny_root, gtc_fusion_gate=gate)
    model = _model(config, train)
    report = _benchmark_script("gtc_diagnose").generation_report(model)
    with torch.no_grad():
        s, _, views = model.evaluation_views()
        added = (model._fuse(s, views) - s)[model.n_users + 1 :]
    assert report["fused"]["c_f_norm"] == pytest.approx(float(added.norm(dim=-1).mean()), abs=1e-4)
    assert -1.0 <= report["fused"]["score_corr_with_s"] < 1.0
    gates = _benchmark_script("gtc_trace").gate_report(model)
    assert (gates["alpha"] == 1.0) == (gate == "softmax")
