"""IMECD: the reverse process against a float64 reference, seeded evaluation, modality roles,
ablation switches, and a whole run that saves and reloads the best checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, seeded_model, tiny_config

from recbole_mm.config import Config
from recbole_mm.smoke import tiny_settings
from recbole_mm.utils import create_dataset, data_preparation

# Five diffusion steps, not the shared four: the evaluation tests below count the denoiser calls.
SMALL = tiny_settings("IMECD", diffusion_steps=5)


def _config(root, **overrides):
    return Config(
        model="IMECD", dataset=TINY, config_dict=tiny_config(root, **{**SMALL, **overrides})
    )


@pytest.fixture(scope="module")
def data(tiny_root):
    config = _config(tiny_root)
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    return config, train, test


def _model(config, train, seed=0):
    """A model for ``config`` (any variant of the tiny one) on the tiny dataset's items."""
    return seeded_model("IMECD", config, train, seed)


def _reference_betas(n_steps: int) -> torch.Tensor:
    # DiffuRec's truncated linear schedule, written out here in float64.
    scale = 1000.0 / n_steps
    return torch.linspace(scale * 1e-4 + 0.01, scale * 0.02 + 0.01, n_steps, dtype=torch.float64)


def test_reverse_process_matches_a_float64_reference(data, tiny_root):
    # 24 steps: the truncated schedule's last beta stays below 1 for T > 20; the T-step chain.
    config = _config(tiny_root, diffusion_steps=24, diffusion_eval_steps=None)
    _, train, test = data
    model = _model(config, train)
    model.train()
    model.calculate_loss(next(iter(train)))  # initialise the codebooks
    model.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        reps = model.item_representations()
        generated = model.generate(interaction, reps)
        conds, attn_mask = model.forward(
            interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], reps
        )

    betas = _reference_betas(config["diffusion_steps"])
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    generator = torch.Generator().manual_seed(config["seed"])  # same draws, same order
    for m in model.branches:
        n, d = conds[m].shape[0], model.hidden_size
        x = torch.randn(n, d, generator=generator).double()  # x_T
        for step in reversed(range(config["diffusion_steps"])):
            t = torch.full((n,), step, dtype=torch.long)
            with torch.no_grad():
                x0_hat = model.denoisers[m](x.float(), t, conds[m], attn_mask).double()
            # Eq. 17 and Eq. 18; sigma is exactly 0 at the last step (abar_prev = 1).
            mean = (abar_prev[step].sqrt() * betas[step] / (1 - abar[step])) * x0_hat + (
                alphas[step].sqrt() * (1 - abar_prev[step]) / (1 - abar[step])
            ) * x
            sigma = math.sqrt((1 - abar_prev[step]) / (1 - abar[step]) * betas[step])
            noise = torch.randn(n, d, generator=generator).double() if step > 0 else 0.0
            x = mean + sigma * noise
        torch.testing.assert_close(generated[m].double(), x, rtol=1e-4, atol=1e-5)


def _seed_change(model, interaction) -> dict[str, float]:
    """Per branch: relative L2 change of ``p_u`` when the evaluation seed moves by one."""
    with torch.no_grad():
        model.eval()
        reps = model.item_representations()
        first = model.generate(interaction, reps)
        model.eval_seed += 1
        model.eval()
        other = model.generate(interaction, reps)
        model.eval_seed -= 1
        model.eval()
    return {
        m: ((other[m] - first[m]).norm(dim=-1) / first[m].norm(dim=-1)).mean().item() for m in first
    }


def test_evaluation_is_seeded_and_repeatable(data):
    config, train, test = data
    model = _model(config, train).eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        first = model.full_sort_predict(interaction)
        model.eval()  # a new evaluation pass starts from the same noise
        assert torch.equal(model.full_sort_predict(interaction), first)
        # predict agrees with the full ranking.
        items = torch.arange(len(interaction)) % model.n_items
        interaction.update(type(interaction)({model.ITEM_ID: items}))
        model.eval()
        scores = model.predict(interaction)
    torch.testing.assert_close(scores, first[torch.arange(len(items)), items])


def test_the_generated_representation_depends_on_the_noise(data, tiny_root):
    # The default denoiser reads x_t at full scale (diffusion_lambda 1), so another evaluation
    # seed (another x_T and per-step noise) moves p_u by a sizeable fraction (about 50 % on the
    # untrained tiny model). At DiffuRec's lambda 0.001 with one step, the gap-fill shipped
    # before issue 21, it moves p_u by about 0.1 %: the diffusion then does nothing.
    _, train, test = data
    interaction = next(iter(test))[0]
    default = _seed_change(_model(_config(tiny_root), train), interaction)
    assert min(default.values()) > 0.1, default
    old = _config(tiny_root, diffusion_lambda=0.001, diffusion_eval_steps=1)
    old_change = _seed_change(_model(old, train), interaction)
    assert max(old_change.values()) < 0.01, old_change


def test_lambda_jitter_switch(data, tiny_root):
    # Off (the default): in training the denoiser's input scale is diffusion_lambda itself, so
    # with dropout off two passes agree; on: DiffuRec's per-element draw makes them differ.
    _, train, _ = data
    batch = next(iter(train))
    for jitter in (False, True):
        config = _config(
            tiny_root,
            diffusion_lambda_jitter=jitter,
            hidden_dropout_prob=0.0,
            attn_dropout_prob=0.0,
            use_vq=False,
        )
        model = _model(config, train).train()
        reps = model.item_representations()
        conds, attn_mask = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], reps)
        x_t = torch.randn(len(batch), model.hidden_size)
        t = torch.full((len(batch),), 2)
        first, second = (model.denoisers["id"](x_t, t, conds["id"], attn_mask) for _ in range(2))
        assert torch.equal(first, second) is not jitter


def test_modality_roles_and_their_errors(data, tiny_root):
    def build(**overrides):
        return _model(_config(tiny_root, **overrides), data[1])

    assert build().branches == ("id", "text", "image")
    # w/o Text, and a role mapped to another modality name; the branches keep their order.
    assert build(modality_roles={"textual": None, "visual": "image"}).branches == ("id", "image")
    swapped = build(modality_roles={"visual": "text", "textual": "image"})
    assert swapped.branches == ("id", "text", "image")
    assert swapped.features["textual"].shape[1] == 6 and swapped.features["visual"].shape[1] == 8
    with pytest.raises(ValueError, match=r"modality_roles\['visual'\] = 'kg'.*'text', 'image'"):
        build(modality_roles={"textual": "text", "visual": "kg"})
    with pytest.raises(ValueError, match="names the role 'audio'.*'textual', 'visual'"):
        build(modality_roles={"audio": "text"})
    with pytest.raises(ValueError, match="lambda_c = -1"):
        build(lambda_c=-1)


def test_default_roles_follow_the_dataset(tiny_root):
    config = _config(tiny_root, modalities={"text": {"dim": 8}})
    from recbole_mm.model.sequential_recommender import IMECD

    assert IMECD(config, create_dataset(config)).branches == ("id", "text")


def test_ablation_switches(data, tiny_root):
    _, train, _ = data
    batch = next(iter(train))
    config = _config(tiny_root, use_id_moe=False, use_vq=False, lambda_c=0.0)
    model = _model(config, train)
    assert not list(model.experts.parameters()) and not list(model.quantizers.parameters())
    losses = model.calculate_loss(batch)
    assert len(losses) == 2 and all(torch.isfinite(x) for x in losses)  # (ce, rec): no L_c

    full = _model(data[0], train).train()
    losses = full.calculate_loss(batch)
    assert len(losses) == 3 and all(torch.isfinite(x) for x in losses)
    assert all(bool(q.initialised) for q in full.quantizers.values())  # Eq. 10 ran
    sum(losses).backward()
    assert full.experts["text"].gate_proj.weight.grad.abs().sum() > 0
    assert full.item_embedding.weight.grad.abs().sum() > 0


def test_defaults_are_the_papers_method():
    # The shipped YAML, not the tiny test settings: Sec. IV-A-4 (sizes, optimiser, T,
    # temperatures), Sec. IV-D (N = 10 experts, best on Toys; Z = 24 codes; lambda_q = 0.7,
    # best on Toys), Eq. 22 (lambda_r = 1), Eq. 14 (no stop-gradient), Eq. 15 (no temperature),
    # Eq. 16-18 (the T-step chain at evaluation); the switches for inventions are off.
    import yaml

    from recbole_mm.properties import model_file

    with open(model_file("IMECD")) as f:
        defaults = yaml.safe_load(f)
    paper = {
        "hidden_size": 128,
        "MAX_ITEM_LIST_LENGTH": 50,
        "learning_rate": 0.001,
        "train_batch_size": 1280,
        "hidden_dropout_prob": 0.1,
        "gumbel_tau": 0.1,
        "n_heads": 4,
        "id_n_layers": 4,
        "content_n_layers": 1,
        "diffusion_steps": 32,
        "noise_schedule": "truncated_linear",
        "n_experts": 10,
        "vq_codebook_size": 24,
        "vq_injection_weight": 0.7,
        "vq_update_rate": 1.0,
        "use_id_moe": True,
        "use_vq": True,
        "lambda_r": 1.0,
        "rec_stop_gradient": False,
        "cl_temperature": 1.0,
        "diffusion_eval_steps": None,
        "diffusion_lambda_jitter": False,
    }
    assert {key: defaults[key] for key in paper} == paper
    # The gap-fill for how x_t enters the denoiser keeps it at full scale (see the test above).
    assert defaults["diffusion_lambda"] == 1.0


@pytest.mark.parametrize(("eval_steps", "calls"), [(None, 5), (5, 5), (2, 2), (1, 1)])
def test_evaluation_calls_each_denoiser_eval_steps_times(data, tiny_root, eval_steps, calls):
    _, train, test = data
    model = _model(_config(tiny_root, diffusion_eval_steps=eval_steps), train).eval()
    counts = dict.fromkeys(model.branches, 0)
    for m in model.branches:
        model.denoisers[m].register_forward_hook(
            lambda *_, m=m: counts.__setitem__(m, counts[m] + 1)
        )
    with torch.no_grad():
        scores = model.full_sort_predict(next(iter(test))[0])
    assert counts == dict.fromkeys(model.branches, calls)
    assert torch.isfinite(scores).all()


def test_one_step_evaluation_is_the_denoiser_at_the_last_step(data, tiny_root):
    # diffusion_eval_steps = 1: p_u = f(x_T, T - 1, s~), x_T drawn from the seeded generator.
    config = _config(tiny_root, diffusion_eval_steps=1)
    _, train, test = data
    model = _model(config, train).eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        reps = model.item_representations()
        generated = model.generate(interaction, reps)
        conds, attn_mask = model.forward(
            interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], reps
        )
        generator = torch.Generator().manual_seed(config["seed"])
        for m in model.branches:
            x_T = torch.randn(conds[m].shape[0], model.hidden_size, generator=generator)
            t = torch.full((x_T.shape[0],), config["diffusion_steps"] - 1)
            expected = model.denoisers[m](x_T, t, conds[m], attn_mask)
            torch.testing.assert_close(generated[m], expected)


def test_eval_steps_out_of_range_is_refused(data, tiny_root):
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match=f"diffusion_eval_steps = {bad}"):
            _model(_config(tiny_root, diffusion_eval_steps=bad), data[1])


def test_reconstruction_weight_and_stop_gradient(data, tiny_root):
    _, train, _ = data
    batch = next(iter(train))

    def rec_grad(**overrides):
        model = _model(_config(tiny_root, lambda_c=0.0, **overrides), train).train()
        _, rec = model.calculate_loss(batch)
        rec.backward()
        return rec, model.item_embedding.weight.grad

    # Same weights and draws: the two differ only by the gradient through the target x0.
    rec, grad = rec_grad(lambda_r=1.0, rec_stop_gradient=True)
    rec_through, grad_through = rec_grad(lambda_r=1.0, rec_stop_gradient=False)
    assert rec > 0 and torch.equal(rec, rec_through)
    pulled = (grad_through - grad).abs().sum(-1).nonzero().flatten()
    assert len(pulled) and set(pulled.tolist()) <= set(batch[train._dataset.iid_field].tolist())
    rec, _ = rec_grad(lambda_r=0.0)
    assert rec == 0


def test_run_saves_and_reloads_the_best_checkpoint(tiny_root, run_in_tmp):
    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm
    from recbole_mm.utils import get_trainer

    config = {**tiny_config(tiny_root, epochs=2), **SMALL}
    result = run_recbole_mm(model="IMECD", dataset=TINY, config_dict=config, saved=True)
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
    loaded_config, model, _, _, _, test = load_data_and_model(result["checkpoint"])
    assert type(model).__name__ == "IMECD"
    assert all(bool(q.initialised) for q in model.quantizers.values())  # codebooks were saved
    trainer = get_trainer(loaded_config["MODEL_TYPE"], "IMECD")(loaded_config, model)
    again = trainer.evaluate(test, load_best_model=False, show_progress=False)
    assert dict(again) == dict(result["test_result"])
