"""RecBole's Trainer, run once per training stage of a multi-stage model, with stage checkpoints.

Generative recommenders train in stages (MMGRec: the graph tokenizer, then the Rec-ID
generator; CEMG: the RQ-VAE tokenizer, then the generator). A model opts in by declaring them:

- ``stages: tuple[str, ...]`` (class attribute): training order. Only the last stage is
  validated and early-stopped with RecBole's evaluator; earlier stages train for their epoch
  count without evaluation.
- ``set_stage(stage)``: what ``calculate_loss`` optimises and which parameters train
  (``requires_grad``); the trainer builds a fresh optimizer over the trainable parameters.
- ``prepare_stage(stage, train_data)`` (optional): called after ``set_stage`` and before the
  stage's first epoch, and again when a stage is resumed, after the checkpoint is loaded (e.g.
  assign Rec-IDs with the trained tokenizer, build the trie). It must depend only on the model's
  state (it may run twice) and must not create parameters: every parameter and buffer exists
  after ``__init__``, so that any stage's checkpoint loads into a freshly built model.

Each stage runs through ``recbole.trainer.Trainer.fit`` (``_train_epoch``, ``_valid_epoch``,
``evaluate``, the optimizer, early stopping and DDP all stay RecBole's), with the weights-only
checkpoints of :class:`recbole_mm.trainer.checkpoint.SafeCheckpointMixin`. After every epoch of
an earlier stage, and at every new best epoch of the last stage, the trainer writes
``<checkpoint_dir>/<Model>-<dataset>-<stage>.pth``; every checkpoint it writes (stage files, the
best model ``saved_model_file``, the every-epoch resume file ``<best>-last.pth``) holds tensors
and plain values only (``torch.load(path, weights_only=True)``) and names its ``stage``. The
last stage's best checkpoint is ``saved_model_file``, so ``evaluate(load_best_model=True)`` and
``load_data_and_model`` work as for any other model.

Config keys: ``stage_epochs``, ``stage_learning_rate`` and ``stage_batch_size`` (``{stage:
value}``; missing stages use ``epochs`` / ``learning_rate`` / ``train_batch_size``; defaults in
``properties/overall.yaml``), ``sgd_momentum`` (momentum of ``learner: sgd``, which RecBole
builds without; unset or 0: none), ``adagrad_initial_accumulator`` (the starting sum of squared
gradients of ``learner: adagrad``, which RecBole leaves at PyTorch's 0; TensorFlow's default is
0.1; unset or 0: PyTorch's), and RecBole's own
``train_stage`` (``all`` when unset, a stage name, or a stage name followed by ``+`` for that
stage and the ones after it) and ``pre_model_path`` (a checkpoint to start from; a stage
checkpoint of an unfinished stage is resumed at its next epoch with its optimizer state).
docs/generative.md has the details.
"""

from __future__ import annotations

import copy
import math
import os

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_mm.model.abstract_recommender import MultiStageRecommender
from recbole_mm.trainer.checkpoint import (
    SafeCheckpointMixin,
    resume_fix,
    save_checkpoint,
    set_random_states,
)
from recbole_mm.trainer.checkpoint import read_checkpoint as _read


def stage_checkpoint_path(checkpoint_dir: str, model: str, dataset: str, stage: str) -> str:
    """Where a stage's checkpoint is written: ``<checkpoint_dir>/<Model>-<dataset>-<stage>.pth``."""
    return os.path.join(checkpoint_dir, f"{model}-{dataset}-{stage}.pth")


def read_checkpoint(path: str, map_location=None, *, fix: str | None = None) -> dict:
    """A checkpoint to start from, as a dict (a bare ``state_dict`` becomes ``{"state_dict"}``).

    Read with ``torch.load(weights_only=True)``; checkpoints holding pickled objects (RecBole's
    own trainers pickle the Config) are refused with an explanation.
    """
    if not os.path.isfile(str(path)):
        raise ValueError(
            f"Checkpoint '{path}' (pre_model_path or resume file) is not a file; give an "
            "existing checkpoint"
        )
    checkpoint = _read(str(path), map_location=map_location, trusted=False, fix=fix)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Checkpoint '{path}' holds no checkpoint dict")
    if "state_dict" not in checkpoint:
        checkpoint = {"state_dict": checkpoint}
    return checkpoint


class MultiStageTrainer(SafeCheckpointMixin, Trainer):
    """Runs the stages a model declares, in order, with a checkpoint per stage."""

    def __init__(self, config, model):
        stages = tuple(getattr(model, "stages", ()) or ())
        if not stages or not all(isinstance(s, str) and s for s in stages):
            raise ValueError(
                f"{type(model).__name__}.stages = {stages!r}: a multi-stage model declares a "
                "non-empty tuple of stage names"
            )
        if len(set(stages)) != len(stages) or any(s.endswith("+") or s == "all" for s in stages):
            raise ValueError(
                f"{type(model).__name__}.stages = {stages!r}: names must be unique, not 'all' "
                "and not end with '+'"
            )
        if not isinstance(model, MultiStageRecommender):
            raise ValueError(
                f"{type(model).__name__} declares stages but is no MultiStageRecommender "
                "(recbole_mm.model.abstract_recommender): the trainer needs its set_stage, "
                "prepare_stage and prepare_evaluation"
            )
        super().__init__(config, model)
        self.stages = stages
        self.stage_epochs = self._per_stage("stage_epochs", config["epochs"], int)
        self.stage_learning_rate = self._per_stage(
            "stage_learning_rate", config["learning_rate"], float
        )
        self.stage_batch_size = self._per_stage("stage_batch_size", config["train_batch_size"], int)
        for stage, size in self.stage_batch_size.items():
            if size < 1:
                raise ValueError(f"stage_batch_size[{stage!r}] = {size} must be >= 1")
        self.stages_to_run = self._parse_train_stage(config["train_stage"])
        self.stage: str | None = None
        self._start: dict | None = None  # a checkpoint to start from, set by resume_checkpoint
        self._final_trained = False

    # Configuration
    def _per_stage(self, key: str, default, kind) -> dict:
        given = self.config[key] or {}
        if not isinstance(given, dict):
            raise ValueError(
                f"{key} = {given!r} must be a dict {{stage: value}} over the stages {self.stages}"
            )
        unknown = sorted(set(given) - set(self.stages))
        if unknown:
            raise ValueError(
                f"{key} = {given!r} names unknown stages {unknown}; the stages of "
                f"{self.config['model']} are {list(self.stages)}"
            )
        values = {stage: kind(given.get(stage, default)) for stage in self.stages}
        for stage, value in values.items():
            if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"{key}[{stage!r}] = {value} must be a finite value >= 0")
        return values

    def _parse_train_stage(self, value) -> list[str]:
        value = "all" if value in (None, "", "all") else str(value)
        if value == "all":
            return list(self.stages)
        name, rest = (value[:-1], True) if value.endswith("+") else (value, False)
        if name not in self.stages:
            options = ["all"] + list(self.stages) + [s + "+" for s in self.stages]
            raise ValueError(
                f"train_stage = '{value}' is not a stage of {self.config['model']}; use one of "
                f"{options} ('<stage>+' runs that stage and the ones after it)"
            )
        start = self.stages.index(name)
        return list(self.stages[start:]) if rest else [name]

    @property
    def final_stage(self) -> str:
        return self.stages[-1]

    def stage_checkpoint_file(self, stage: str) -> str:
        return stage_checkpoint_path(
            self.checkpoint_dir, self.config["model"], self.config["dataset"], stage
        )

    # Checkpoints
    def checkpoint_state(self, epoch: int) -> dict:
        """Every checkpoint this trainer writes names its stage and the stage's progress."""
        state = super().checkpoint_state(epoch)
        state.update(
            stages=list(self.stages),
            stage=self.stage,
            epochs=int(self.epochs),
            completed=bool(self.stage != self.final_stage and epoch + 1 >= self.epochs),
        )
        return state

    def _save_stage_checkpoint(self, epoch: int, *, verbose: bool) -> None:
        if not self._is_writer():
            return
        path = self.stage_checkpoint_file(self.stage)
        save_checkpoint(self.checkpoint_state(epoch), path)
        if verbose:
            self.logger.info(set_color("Saving stage checkpoint", "blue") + f": {path}")

    def _mark_completed(self, verbose: bool) -> None:
        """Flag the last stage's checkpoint (its best epoch) as completed."""
        path = self.stage_checkpoint_file(self.stage)
        if not self._is_writer() or not os.path.isfile(path):
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["completed"] = True
        save_checkpoint(state, path)
        if verbose:
            self.logger.info(f"Stage {self.stage} completed: {path}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """The best-model checkpoint in the last stage; a stage checkpoint in every stage."""
        if self.stage == self.final_stage:
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        self._save_stage_checkpoint(epoch, verbose=verbose)

    def resume_checkpoint(self, resume_file):
        """Continue an interrupted run; takes effect in the next ``fit``.

        A checkpoint that names its stage (stage files, ``<best>-last.pth``) continues where it
        stopped: its stage at its next epoch, or the stage after it when it was completed; the
        resume file also restores the random states, so the run continues exactly. A
        checkpoint without a stage (written by a single-stage trainer) continues the last stage.
        """
        checkpoint = read_checkpoint(
            str(resume_file), map_location=self.device, fix=resume_fix(resume_file)
        )
        if "epoch" not in checkpoint:
            raise ValueError(
                f"resume_checkpoint: '{resume_file}' holds weights only, no training progress; "
                "pass it as pre_model_path instead"
            )
        if "stage" not in checkpoint:
            checkpoint = {**checkpoint, "stage": self.final_stage, "completed": False}
            checkpoint.setdefault("best_model_file", str(resume_file))
        self._start = checkpoint
        self.stages_to_run = list(self.stages)

    def _load_weights(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def _plan(self) -> tuple[list[str], dict | None, dict | None]:
        """Stages to run, the checkpoint to load first, and the progress to resume."""
        checkpoint = self._start
        continue_run = checkpoint is not None  # resume_checkpoint: pick up where it stopped
        if checkpoint is None and self.config["pre_model_path"]:
            checkpoint = read_checkpoint(self.config["pre_model_path"], map_location=self.device)
            continue_run = self.config["train_stage"] in (None, "", "all")
        run = list(self.stages_to_run)
        stage = checkpoint.get("stage") if checkpoint is not None else None
        if stage is None:
            return run, checkpoint, None
        if stage not in self.stages:
            raise ValueError(
                f"The checkpoint's stage '{stage}' is not a stage of {self.config['model']} "
                f"{list(self.stages)}: pre_model_path points to another model's checkpoint"
            )
        completed = bool(checkpoint.get("completed"))
        if continue_run:
            start = self.stages.index(stage) + (1 if completed else 0)
            run = list(self.stages[start:])
        resume = checkpoint if (not completed and run and run[0] == stage) else None
        return run, checkpoint, resume

    # Training
    def stage_loader(self, train_data, stage: str):
        """The training loader of ``stage``: ``train_data`` itself when the stage's batch size
        (``stage_batch_size``) is the loader's, else a loader of the same class over the same
        rows at the stage's batch size.

        A torch ``DataLoader`` fixes its batch size when built, so the other size needs another
        loader. It takes over ``train_data``'s shuffling generator state, and
        :meth:`_end_stage_loader` hands the state back after the stage, so the shuffling stream
        runs on across stages as it would with one loader (runs and resumed runs agree).
        """
        size = self.stage_batch_size[stage]
        if size == train_data.config["train_batch_size"]:
            return train_data
        config = copy.copy(train_data.config)
        config.final_config_dict = dict(config.final_config_dict)
        config["train_batch_size"] = size
        loader = type(train_data)(
            config, train_data._dataset, train_data._sampler, shuffle=train_data.shuffle
        )
        loader.generator.set_state(train_data.generator.get_state())
        return loader

    @staticmethod
    def _end_stage_loader(train_data, loader) -> None:
        if loader is not train_data:
            train_data.generator.set_state(loader.generator.get_state())

    def _enter_stage(self, stage: str, train_data) -> None:
        self.stage = stage
        self.model.set_stage(stage)
        self.model.prepare_stage(stage, train_data)
        self.epochs = self.stage_epochs[stage]
        self.eval_step = min(self.config["eval_step"], self.epochs)
        self.learning_rate = self.stage_learning_rate[stage]
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params and self.epochs > 0:
            raise ValueError(
                f"Stage '{stage}' of {self.config['model']} has no trainable parameters after "
                f"set_stage('{stage}'); set stage_epochs['{stage}'] = 0 or fix set_stage"
            )
        self.optimizer = self._build_optimizer(params=params)
        momentum = float(self.config["sgd_momentum"] or 0.0)
        if momentum and self.learner.lower() == "sgd":  # RecBole's SGD has no momentum
            self.optimizer = torch.optim.SGD(
                params, lr=self.learning_rate, momentum=momentum, weight_decay=self.weight_decay
            )
        accumulator = float(self.config["adagrad_initial_accumulator"] or 0.0)
        if accumulator and self.learner.lower() == "adagrad":  # RecBole's starts at 0
            self.optimizer = torch.optim.Adagrad(
                params,
                lr=self.learning_rate,
                initial_accumulator_value=accumulator,
                weight_decay=self.weight_decay,
            )
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -math.inf if self.valid_metric_bigger else math.inf
        self.best_valid_result = None
        self.train_loss_dict = {}
        if not self.config["single_spec"]:
            # DDP registers the parameters that require grad when it wraps the model: rewrap
            # so that parameters frozen or unfrozen by set_stage are synchronised correctly.
            from torch.nn.parallel import DistributedDataParallel

            on_cpu = torch.device(self.device).type == "cpu"  # gloo: no device_ids
            device_ids = None if on_cpu else [self.config["local_rank"]]
            self.distributed_model = DistributedDataParallel(self.model, device_ids=device_ids)

    def _resume(self, checkpoint: dict, saved: bool, verbose: bool) -> None:
        """Training progress of an unfinished stage (its weights are already loaded)."""
        if checkpoint.get("optimizer"):
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = int(checkpoint.get("epoch", -1)) + 1
        self.cur_step = int(checkpoint.get("cur_step", 0))
        if "best_valid_score" in checkpoint:
            self.best_valid_score = float(checkpoint["best_valid_score"])
        self.best_valid_result = checkpoint.get("best_valid_result") or None
        self.train_loss_dict.update(
            {int(k): float(v) for k, v in checkpoint.get("train_loss", {}).items()}
        )
        # Exact continuation from a resume file: SafeCheckpointMixin.fit restores these.
        self._pending_random_states = checkpoint.get("random_states")
        self.logger.info(
            f"Resuming stage {self.stage} of {self.config['model']} at epoch {self.start_epoch}"
        )
        if checkpoint.get("best_model_file"):
            self.saved_model_file = str(checkpoint["best_model_file"])  # keep the run's files
        if self.stage == self.final_stage and saved and not os.path.isfile(self.saved_model_file):
            # The best model so far becomes the best-model checkpoint now, so that evaluation
            # after training finds it even if no later epoch improves on it.
            SafeCheckpointMixin._save_checkpoint(self, self.start_epoch - 1, verbose=verbose)

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        """Run the planned stages through RecBole's ``fit``; returns the last stage's result."""
        run, checkpoint, resume = self._plan()
        self._start = None
        if checkpoint is not None:
            # Before the first stage's prepare_stage, which may derive state from the weights.
            self._load_weights(checkpoint)
            if resume is None and checkpoint.get("random_states") is not None:
                # A resume file written at a stage's end: continue exactly from there.
                set_random_states(
                    checkpoint["random_states"], getattr(train_data, "generator", None)
                )
                if checkpoint.get("best_model_file"):
                    self.saved_model_file = str(checkpoint["best_model_file"])
        result = (self.best_valid_score, None)
        if not run:
            self.logger.info(f"All stages of {self.config['model']} are complete: nothing to train")
            self._final_trained = True
            self.stage = self.final_stage
            self.best_valid_score = float(checkpoint.get("best_valid_score", -math.inf))
            if saved:
                SafeCheckpointMixin._save_checkpoint(
                    self, int(checkpoint.get("epoch", -1)), verbose=verbose
                )
            return self.best_valid_score, None
        for stage in run:
            self._enter_stage(stage, train_data)
            if resume is not None and stage == resume["stage"]:
                self._resume(resume, saved, verbose)
            final = stage == self.final_stage
            loader = self.stage_loader(train_data, stage)
            if verbose:
                self.logger.info(
                    set_color(f"Stage {stage}", "green")
                    + f": epochs {self.start_epoch}..{self.epochs - 1}, "
                    f"learning rate {self.learning_rate}, batch size {self.stage_batch_size[stage]}"
                    + (", validated" if final and valid_data else "")
                )
            try:
                result = super().fit(
                    loader,
                    valid_data if final else None,
                    verbose=verbose,
                    saved=saved,
                    show_progress=show_progress,
                    callback_fn=callback_fn if final else None,
                )
            finally:
                self._end_stage_loader(train_data, loader)
            if saved:
                if final:
                    if not os.path.isfile(self.saved_model_file):
                        # No epoch was validated (no valid_data): keep the last model.
                        self._save_checkpoint(self.epochs - 1, verbose=verbose)
                    self._mark_completed(verbose)
            self._final_trained = self._final_trained or final
        return result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation; ``None`` when the run stopped before the last stage."""
        if load_best_model and model_file is None and not self._final_trained:
            self.logger.warning(
                f"train_stage = {self.config['train_stage']!r} stops before the last stage "
                f"'{self.final_stage}': nothing to evaluate. The stage checkpoints are in "
                f"{self.checkpoint_dir}; continue with pre_model_path."
            )
            return None
        # Generative models exclude from their beams what RecBole masks for this loader
        # (test: training and validation items), so that no unscored item fills the top-k.
        self.model.prepare_evaluation(eval_data)
        return super().evaluate(
            eval_data,
            load_best_model=load_best_model,
            model_file=model_file,
            show_progress=show_progress,
        )
