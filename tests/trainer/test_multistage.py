"""MultiStageTrainer on a toy two-stage model: order, per-stage settings, checkpoints, resume."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, tiny_config
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_mm.model.abstract_recommender import MultiStageRecommender
from recbole_mm.quick_start import build, prepare
from recbole_mm.trainer import MultiStageTrainer
from recbole_mm.trainer.checkpoint import last_checkpoint_file
from recbole_mm.trainer.multistage import stage_checkpoint_path
from recbole_mm.utils import get_trainer, recbole_mm_models


class ToyTwoStage(MultiStageRecommender, GeneralRecommender):
    """Stage "items" trains item vectors against a fixed anchor; "users" trains user vectors."""

    input_type = InputType.PAIRWISE
    stages = ("items", "users")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["embedding_size"]
        self.item = nn.Embedding(self.n_items, d)
        self.user = nn.Embedding(self.n_users, d)
        self.register_buffer("anchor", torch.ones(d))
        self.stage = None
        self.log = []  # (event, stage, item weights at that moment)

    def _stage_modules(self):
        return {"items": [self.item], "users": [self.user]}

    def set_stage(self, stage):
        super().set_stage(stage)
        self.log.append(("set_stage", stage, None))

    def prepare_stage(self, stage, train_data):
        self.log.append(("prepare", stage, self.item.weight.detach().clone()))

    def _scores(self, user, item):
        if self.stage == "items":
            return self.item(item) @ self.anchor
        return (self.user(user) * self.item(item)).sum(-1)

    def calculate_loss(self, interaction):
        self.log.append(("loss", self.stage, None))
        user = interaction[self.USER_ID]
        diff = self._scores(user, interaction[self.ITEM_ID]) - self._scores(
            user, interaction[self.NEG_ITEM_ID]
        )
        return -torch.nn.functional.logsigmoid(diff).mean()

    def predict(self, interaction):
        return self._scores(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        self.log.append(("predict", self.stage, None))
        return (self.user(interaction[self.USER_ID]) @ self.item.weight.T).reshape(-1)


@pytest.fixture(autouse=True)
def _in_tmp(run_in_tmp):
    """RecBole writes log/ and log_tensorboard/ into the working folder: keep them out."""
    return run_in_tmp


@pytest.fixture
def toy(monkeypatch):
    """ToyTwoStage registered as one of our models for this test only."""
    monkeypatch.setitem(recbole_mm_models(), "ToyTwoStage", ToyTwoStage)
    return "ToyTwoStage"


def _setup(root, folder, **overrides):
    settings = dict(
        checkpoint_dir=str(folder),
        epochs=2,
        stage_epochs={"items": 2},
        stage_learning_rate={"items": 0.05},
        learning_rate=0.01,
        eval_step=1,
        stopping_step=10,
    )
    config, _, train, valid, test = prepare(
        "ToyTwoStage", TINY, None, tiny_config(root, **{**settings, **overrides})
    )
    model = ToyTwoStage(config, train._dataset)
    trainer = MultiStageTrainer(config, model)
    return config, model, trainer, train, valid, test


def _events(model, event):
    return [stage for e, stage, _ in model.log if e == event]


def _load(path):
    return torch.load(path, weights_only=True)  # the stage checkpoints hold no pickled object


def test_a_model_with_stages_must_be_a_multistage_recommender():
    class Plain(nn.Module):  # stages and a set_stage, but not the declared contract
        stages = ("a", "b")

        def set_stage(self, stage):
            self.stage = stage

    with pytest.raises(ValueError, match="no MultiStageRecommender"):
        MultiStageTrainer(None, Plain())


def test_get_trainer_picks_the_multistage_trainer(toy):
    assert get_trainer(ModelType.GENERAL, toy) is MultiStageTrainer
    assert get_trainer(ModelType.GENERAL, "BPR").__name__ == "Trainer"


def test_stages_run_in_order_with_their_own_settings(toy, tiny_root, tmp_path):
    config, model, trainer, train, valid, test = _setup(tiny_root, tmp_path)
    n_batches = len(train)
    item_before = model.item.weight.detach().clone()
    best_score, best_result = trainer.fit(train, valid, saved=True, verbose=False)
    assert best_result is not None and best_score == best_result["ndcg@5"]
    assert _events(model, "set_stage") == ["items", "users"]
    assert _events(model, "prepare") == ["items", "users"]
    # items: stage_epochs 2; users: `epochs` (2); only the last stage is evaluated.
    assert _events(model, "loss") == ["items"] * 2 * n_batches + ["users"] * 2 * n_batches
    assert set(_events(model, "predict")) == {"users"}
    # The users stage starts from the trained items and leaves them frozen.
    item_after_items = model.log[[e for e, _, _ in model.log].index("prepare", 2)][2]
    assert not torch.equal(item_after_items, item_before)
    torch.testing.assert_close(model.item.weight.detach(), item_after_items)

    items_ckpt = _load(stage_checkpoint_path(str(tmp_path), toy, TINY, "items"))
    users_ckpt = _load(stage_checkpoint_path(str(tmp_path), toy, TINY, "users"))
    assert items_ckpt["stage"] == "items" and items_ckpt["completed"]
    assert items_ckpt["epoch"] == 1 and items_ckpt["epochs"] == 2
    assert items_ckpt["optimizer"]["param_groups"][0]["lr"] == 0.05
    assert users_ckpt["completed"] and users_ckpt["optimizer"]["param_groups"][0]["lr"] == 0.01
    # Only the trainable parameters are optimised in each stage.
    assert len(items_ckpt["optimizer"]["param_groups"][0]["params"]) == 1
    # RecBole's best checkpoint holds the last stage's best epoch and reloads for the test.
    assert users_ckpt["best_valid_score"] == pytest.approx(best_score)
    assert trainer.evaluate(test, load_best_model=True) is not None


def test_a_stage_run_alone_continues_from_the_previous_stage_checkpoint(toy, tiny_root, tmp_path):
    _, first, trainer, train, valid, test = _setup(tiny_root, tmp_path, train_stage="items")
    assert trainer.fit(train, valid, saved=True, verbose=False)[1] is None
    assert _events(first, "set_stage") == ["items"]
    assert trainer.evaluate(test) is None  # nothing to evaluate before the last stage
    path = stage_checkpoint_path(str(tmp_path), toy, TINY, "items")
    assert _load(path)["completed"]

    for train_stage in ("users", "all"):  # "all" skips the completed stage
        _, model, trainer, train, valid, test = _setup(
            tiny_root, tmp_path, train_stage=train_stage, pre_model_path=path
        )
        trainer.fit(train, valid, saved=True, verbose=False)
        assert _events(model, "set_stage") == ["users"]
        # prepare_stage sees the previous stage's weights.
        torch.testing.assert_close(model.log[1][2], _load(path)["state_dict"]["item.weight"])
        assert trainer.evaluate(test) is not None


class _Interrupt(Exception):
    pass


def _interrupt_after(model, n_calls):
    loss = model.calculate_loss
    calls = {"n": 0}

    def interrupted(interaction):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise _Interrupt
        return loss(interaction)

    model.calculate_loss = interrupted


@pytest.mark.parametrize("how", ["pre_model_path", "resume_checkpoint"])
def test_an_interrupted_stage_resumes_at_its_next_epoch(how, toy, tiny_root, tmp_path):
    overrides = dict(stage_epochs={"items": 3, "users": 1})
    _, model, trainer, train, valid, _ = _setup(tiny_root, tmp_path, **overrides)
    n_batches = len(train)
    _interrupt_after(model, n_batches + 1)  # dies in the second epoch of "items"
    with pytest.raises(_Interrupt):
        trainer.fit(train, valid, saved=True, verbose=False)
    path = stage_checkpoint_path(str(tmp_path), toy, TINY, "items")
    progress = _load(path)
    assert (progress["stage"], progress["epoch"], progress["completed"]) == ("items", 0, False)

    resume = {"pre_model_path": path} if how == "pre_model_path" else {}
    _, model, trainer, train, valid, test = _setup(tiny_root, tmp_path, **overrides, **resume)
    if how == "resume_checkpoint":
        trainer.resume_checkpoint(path)
    trainer.fit(train, valid, saved=True, verbose=False)
    # Epochs 1 and 2 of "items", then "users".
    assert _events(model, "loss") == ["items"] * 2 * n_batches + ["users"] * n_batches
    torch.testing.assert_close(model.log[1][2], progress["state_dict"]["item.weight"])
    done = _load(path)
    assert done["completed"] and done["epoch"] == 2
    # Adam's step count continues from the checkpoint's optimizer state.
    steps = [s["step"] for s in done["optimizer"]["state"].values()]
    assert steps == [3 * n_batches]
    assert trainer.evaluate(test) is not None


def test_an_interrupted_last_stage_resumes_and_keeps_its_best_model(toy, tiny_root, tmp_path):
    overrides = dict(stage_epochs={"items": 1, "users": 3})
    _, model, trainer, train, valid, _ = _setup(tiny_root, tmp_path, **overrides)
    n_batches = len(train)
    _interrupt_after(model, 2 * n_batches + 1)  # dies in the second epoch of "users"
    with pytest.raises(_Interrupt):
        trainer.fit(train, valid, saved=True, verbose=False)
    path = stage_checkpoint_path(str(tmp_path), toy, TINY, "users")
    progress = _load(path)
    assert (progress["stage"], progress["epoch"], progress["completed"]) == ("users", 0, False)

    # The resumed stage's best model so far is the best-model checkpoint before any epoch runs.
    _, model, trainer, train, valid, test = _setup(
        tiny_root, tmp_path, **overrides, pre_model_path=path
    )
    _interrupt_after(model, 0)
    with pytest.raises(_Interrupt):
        trainer.fit(train, valid, saved=True, verbose=False)
    best = _load(trainer.saved_model_file)
    torch.testing.assert_close(
        best["state_dict"]["user.weight"], progress["state_dict"]["user.weight"]
    )

    _, model, trainer, train, valid, test = _setup(
        tiny_root, tmp_path, **overrides, pre_model_path=path
    )
    trainer.fit(train, valid, saved=True, verbose=False)
    assert _events(model, "set_stage") == ["users"]
    assert _events(model, "loss") == ["users"] * 2 * n_batches
    assert _load(path)["completed"]
    assert trainer.evaluate(test, load_best_model=True) is not None

    # Everything complete: "all" from the last stage's checkpoint trains nothing.
    _, model, trainer, train, valid, test = _setup(
        tiny_root, tmp_path, **overrides, pre_model_path=path
    )
    trainer.fit(train, valid, saved=True, verbose=False)
    assert _events(model, "loss") == []
    assert trainer.evaluate(test, load_best_model=True) is not None


def _built(root, folder, **overrides):
    """Model and trainer through the entry points' build (seeded; resume_file honoured)."""
    settings = dict(checkpoint_dir=str(folder), epochs=2, stage_epochs={"items": 3}, eval_step=1)
    config, _, train, valid, test = prepare(
        "ToyTwoStage", TINY, None, tiny_config(root, **{**settings, **overrides})
    )
    model, trainer = build(config, train)
    return model, trainer, train, valid, test


# In "items" (3 epochs); in the first epoch of "users" (the resume file is the end of "items");
# in the second epoch of "users".
@pytest.mark.parametrize("interrupt_epoch", [1, 3, 4])
def test_resume_file_continues_exactly(interrupt_epoch, toy, tiny_root, tmp_path):
    full_model, trainer, train, valid, _ = _built(tiny_root, tmp_path / "full")
    full = trainer.fit(train, valid, saved=True, verbose=False)
    n_batches = len(train)

    model, trainer, train, valid, _ = _built(tiny_root, tmp_path / "cut")
    _interrupt_after(model, interrupt_epoch * n_batches + 1)
    with pytest.raises(_Interrupt):
        trainer.fit(train, valid, saved=True, verbose=False)
    last = last_checkpoint_file(trainer.saved_model_file)
    state = _load(last)
    stage = "items" if interrupt_epoch <= 3 else "users"
    assert (state["stage"], state["completed"]) == (stage, interrupt_epoch == 3)

    resumed, trainer, train, valid, _ = _built(tiny_root, tmp_path / "cut", resume_file=last)
    again = trainer.fit(train, valid, saved=True, verbose=False)
    assert again[0] == full[0]
    for name, value in full_model.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_each_stage_trains_with_its_own_batch_size(toy, tiny_root, tmp_path):
    sizes = []
    _, model, trainer, train, valid, _ = _setup(
        tiny_root, tmp_path, train_batch_size=64, stage_batch_size={"items": 16}
    )
    loss = model.calculate_loss

    def recording(interaction):
        sizes.append((model.stage, len(interaction)))
        return loss(interaction)

    model.calculate_loss = recording
    trainer.fit(train, valid, saved=False, verbose=False)
    n_rows = len(train._dataset)
    assert n_rows > 64  # both sizes split the rows into several batches
    for stage, size in (("items", 16), ("users", 64)):
        batches = [n for s, n in sizes if s == stage]
        per_epoch = -(-n_rows // size)  # the last batch of an epoch may be short
        assert len(batches) == 2 * per_epoch, stage
        assert max(batches) == size, stage
    assert train.step == 64  # the run's own loader is left as it was


def test_sgd_momentum_reaches_each_stage_optimizer(toy, tiny_root, tmp_path):
    """RecBole builds SGD without momentum; sgd_momentum (MMGRec's authors: 0.99) adds it."""
    _, model, trainer, train, _, _ = _setup(
        tiny_root, tmp_path, learner="sgd", sgd_momentum=0.9, weight_decay=0.001
    )
    for stage, lr in (("items", 0.05), ("users", 0.01)):
        trainer._enter_stage(stage, train)
        (group,) = trainer.optimizer.param_groups
        assert isinstance(trainer.optimizer, torch.optim.SGD)
        assert (group["momentum"], group["lr"], group["weight_decay"]) == (0.9, lr, 0.001)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert {id(p) for p in group["params"]} == trainable


def test_adagrad_initial_accumulator_reaches_each_stage_optimizer(toy, tiny_root, tmp_path):
    """RecBole builds Adagrad from a zero sum of squares, whose first step moves every weight by
    the learning rate; adagrad_initial_accumulator (TIGER: TensorFlow's 0.1) starts it higher."""
    _, model, trainer, train, _, _ = _setup(
        tiny_root, tmp_path, learner="adagrad", adagrad_initial_accumulator=0.1
    )
    for stage in ("items", "users"):
        trainer._enter_stage(stage, train)
        assert isinstance(trainer.optimizer, torch.optim.Adagrad)
        (group,) = trainer.optimizer.param_groups
        assert group["initial_accumulator_value"] == 0.1
        state = trainer.optimizer.state[group["params"][0]]
        assert torch.all(state["sum"] == 0.1)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert {id(p) for p in group["params"]} == trainable
    _, _, plain, train, _, _ = _setup(tiny_root, tmp_path / "plain", learner="adagrad")
    plain._enter_stage("items", train)
    assert plain.optimizer.param_groups[0]["initial_accumulator_value"] == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train_stage", "tokens", "train_stage = 'tokens' is not a stage"),
        ("stage_batch_size", {"items": 0}, r"stage_batch_size\['items'\] = 0 must be >= 1"),
        ("stage_epochs", {"itemz": 1}, "stage_epochs = .* names unknown stages"),
        ("stage_learning_rate", 0.1, "stage_learning_rate = 0.1 must be a dict"),
        ("pre_model_path", "/nonexistent.pth", "is not a file"),
    ],
)
def test_bad_stage_settings_are_refused(key, value, message, toy, tiny_root, tmp_path):
    with pytest.raises(ValueError, match=message):
        _, _, trainer, train, valid, _ = _setup(tiny_root, tmp_path, **{key: value})
        trainer.fit(train, valid, saved=False, verbose=False)


@pytest.mark.slow
def test_run_and_reload_through_the_entry_points(toy, tiny_root, run_in_tmp):
    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    result = run_recbole_mm(
        model=toy,
        dataset=TINY,
        config_dict=tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp / "saved")),
    )
    assert result["test_result"] is not None
    _, model, _, _, _, _ = load_data_and_model(result["checkpoint"])
    assert isinstance(model, ToyTwoStage)
    # The model built by the entry points gets the multi-stage trainer too.
    config, _, train, _, _ = prepare(toy, TINY, None, tiny_config(tiny_root))
    assert isinstance(build(config, train)[1], MultiStageTrainer)


def _ddp_rank(rank, root, folder, port):
    """One rank of a two-process gloo run (spawned: the toy model is registered here too)."""
    import torch.distributed as dist

    recbole_mm_models()["ToyTwoStage"] = ToyTwoStage
    settings = dict(
        checkpoint_dir=folder,
        stage_epochs={"items": 2, "users": 1},
        nproc=2,
        world_size=2,
        ip="localhost",
        port=port,
        offset=0,
        local_rank=rank,
    )
    config, _, train, valid, test = prepare(
        "ToyTwoStage", TINY, None, tiny_config(root, **settings)
    )
    model, trainer = build(config, train)
    trainer.fit(train, valid, saved=True, verbose=False)
    assert trainer.evaluate(test) is not None
    torch.save(model.state_dict(), f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_stages_train_in_sync_under_ddp(tiny_root, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    folder = str(tmp_path)
    mp.spawn(_ddp_rank, args=(tiny_root, folder, port), nprocs=2, join=True)
    ranks = [torch.load(f"{folder}/rank{r}.pt", weights_only=True) for r in range(2)]
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # gradients were all-reduced
    for stage in ("items", "users"):
        saved = _load(stage_checkpoint_path(folder, "ToyTwoStage", TINY, stage))
        assert saved["completed"] and saved["config"]["world_size"] == 2
