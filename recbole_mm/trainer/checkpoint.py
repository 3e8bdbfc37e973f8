"""Checkpoints that load with ``torch.load(weights_only=True)``, exact resume, DDP on CPU.

:class:`SafeCheckpointMixin` goes in front of any RecBole trainer class
(``class MyTrainer(SafeCheckpointMixin, recbole.trainer.Trainer)``, or
:func:`with_safe_checkpoints` for a class chosen at run time) and changes three things:

1. **Format.** RecBole pickles its ``Config`` into every checkpoint, so reading one runs
   arbitrary code and needs ``weights_only=False``. Ours hold only tensors and plain values:
   the configuration as a plain dict (``config``: every value of the final configuration except
   the four that RecBole derives at start-up: ``MODEL_TYPE``, ``MODEL_INPUT_TYPE``,
   ``eval_type``, ``device``), plus the user's own settings (``config_overrides``) from which
   :func:`load_config` rebuilds a ``Config``. Everything else keeps RecBole's keys
   (``epoch``, ``cur_step``, ``best_valid_score``, ``state_dict``, ``other_parameter``,
   ``optimizer``), so RecBole's ``evaluate(load_best_model=True)`` reads them unchanged.
2. **Resume.** RecBole writes a checkpoint only when validation improves, so an interrupted run
   has nothing to continue from but its best epoch. We also write ``<best file>-last.pth`` at the
   end of every epoch with the optimizer, early-stopping counters, the best validation result,
   the path of the best checkpoint and every random state that training consumes (torch, CUDA,
   numpy (RecBole's negative sampler), Python, and the train loader's shuffling generator).
   ``resume_checkpoint(<...>-last.pth)`` restores all of it, so the resumed run continues
   bit-for-bit as the uninterrupted one would have (``tests/test_resume.py``).
3. **DDP on CPU.** RecBole wraps the model as ``DistributedDataParallel(device_ids=[rank])``,
   which torch refuses for CPU modules; on CPU we wrap without ``device_ids`` (gloo backend).
   In every distributed run, rank 0 broadcasts its checkpoint path so that all ranks reload the
   same best model (RecBole names the file after each process's own clock).

Checkpoints written by RecBole's own trainers (pickled Config) are still read by
:func:`read_checkpoint` with ``trusted=True``: only from sources you trust.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recbole_mm.config import Config, apply_aliases

FORMAT = "recbole_mm.checkpoint/1"
# Derived by RecBole's Config at start-up; never stored, recomputed on load.
DERIVED_KEYS = ("MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device")
# Describe the process that ran, not the run: the loading process keeps its own.
RUNTIME_KEYS = DERIVED_KEYS + (
    "gpu_id",
    "use_gpu",
    "local_rank",
    "single_spec",
    "nproc",
    "world_size",
    "ip",
    "port",
    "offset",
    "state",
    "show_progress",
)
_PLAIN = (str, int, float, bool, type(None))


def to_plain(value: Any, where: str) -> Any:
    """``value`` with numpy scalars made Python numbers; anything else not loadable refused.

    Raises:
        ValueError: ``value`` holds an object ``torch.load(weights_only=True)`` cannot read.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (_PLAIN, torch.Tensor, torch.Size)):
        return value
    if isinstance(value, (list, tuple)):
        items = [to_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {
            to_plain(key, f"{where} key {key!r}"): to_plain(item, f"{where}[{key!r}]")
            for key, item in value.items()
        }
    raise ValueError(
        f"Checkpoint entry {where} is a {type(value).__name__}, which "
        f"torch.load(weights_only=True) cannot read. Store tensors, numbers, strings, lists "
        f"or dicts."
    )


def plain_config(config) -> dict:
    """The final configuration as plain values (the derived keys left out)."""
    return {
        key: to_plain(value, f"config[{key!r}]")
        for key, value in config.final_config_dict.items()
        if key not in DERIVED_KEYS
    }


def random_states(generator: torch.Generator | None = None) -> dict:
    """Every random state RecBole training consumes, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        states["train_loader"] = generator.get_state()
    return states


def set_random_states(states: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`random_states` saved."""
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = states["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None and "train_loader" in states:
        generator.set_state(states["train_loader"])


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and what to do."""


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_MAGIC = b"\x80"  # torch's legacy format: a pickle (protocol 2+) from the first byte


def checkpoint_kind(path: str | Path) -> str:
    """``"zip"`` or ``"legacy"`` for a file torch.save may have written, else ``"other"``."""
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(PICKLE_MAGIC):
        return "legacy"
    return "other"


def _what_it_is(path: Path) -> str:
    """A short description of a file that is not a torch checkpoint, for messages."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(256)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file of {size} bytes starting with {head[:8]!r}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"a text file (first line: {first[:60]!r})"


def read_checkpoint(
    path: str | Path, *, map_location: Any = None, trusted: bool = False, fix: str | None = None
) -> dict:
    """Read a checkpoint: ours with ``weights_only=True``; RecBole's only when ``trusted``.

    The file type is checked first, so that only a file torch wrote can be called a RecBole
    (pickled) checkpoint.

    Args:
        fix: what the user can do when the file is truncated or corrupt (a default otherwise).

    Raises:
        CheckpointError: the file is missing, is not a torch checkpoint, is truncated or
            corrupt, or is a RecBole (pickled) checkpoint and ``trusted`` is False.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist (or is not a file).")
    if checkpoint_kind(path) == "other":
        raise CheckpointError(
            f"{path} is not a torch checkpoint: it is {_what_it_is(path)}. Give a .pth file "
            f"written by a run (the best checkpoint in checkpoint_dir, or its -last.pth file)."
        )
    fix = fix or (
        "Use another checkpoint of the run (checkpoint_dir holds the best one and its "
        "-last.pth resume file) or train again."
    )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path} is truncated or corrupt ({err}). {fix}") from err
        if not trusted:
            raise CheckpointError(
                f"{path} is not a recbole_mm checkpoint: it holds pickled objects (RecBole's "
                f"own trainers pickle the Config), and unpickling can run code. Load it only "
                f"if you trust its source: pass trusted=True (--trusted on the command line)."
            ) from err
    except (RuntimeError, EOFError, OSError) as err:
        reason = str(err).split(". ")[0] or type(err).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt ({reason}): it was probably cut short while being "
            f"written or copied. {fix}"
        ) from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({err}). {fix}") from err


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save(state, path)`` that never leaves a partly written file at ``path``.

    The state is written to a temporary file in the same folder, flushed to disk, then renamed
    over ``path`` (atomic on POSIX and Windows): a kill or a full disk during the write leaves
    the previous file as it was.
    """
    import os
    import tempfile

    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


RELOAD_NEEDS = (
    "Reloading a model needs the checkpoint a run writes to checkpoint_dir (<Model>-<date>.pth), "
    "which also holds the run's configuration ('config') to rebuild the dataset and the model."
)
RESUME_NEEDS = (
    "Resuming needs a checkpoint a run wrote to checkpoint_dir (its -last.pth file, or the best "
    "checkpoint), which also holds the configuration and the training progress."
)


def describe_foreign_checkpoint(checkpoint: Any, needed: str = RELOAD_NEEDS) -> str:
    """What a torch file that is not a run's checkpoint holds, and what is needed instead."""
    if (
        isinstance(checkpoint, dict)
        and checkpoint
        and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    ):
        return (
            f"holds model weights only (a state_dict of {len(checkpoint)} tensors, as "
            f"torch.save(model.state_dict(), ...) writes), not a checkpoint of a run. {needed}"
        )
    if isinstance(checkpoint, dict):
        keys = ", ".join(repr(k) for k in list(checkpoint)[:8])
        return f"is not a checkpoint of a run: its keys are {keys or 'none'}. {needed}"
    return f"holds a {type(checkpoint).__name__}, not a checkpoint of a run. {needed}"


def is_plain_checkpoint(checkpoint: dict) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def load_config(checkpoint: dict):
    """The run's ``Config``, rebuilt from a recbole_mm checkpoint.

    The user's settings rebuild it (so RecBole derives device, model type and evaluator type
    for this process); the stored final values then replace whatever the property files
    would give today, except the keys that describe the process (device, ranks, logging).
    This process's command line is not read: it is not the run's.
    """
    # A checkpoint of an earlier release stores the names that release read: translated to
    # today's (gtc_modalities -> modality_roles, ...), they win over the ones the property
    # files give now, e.g. a dataset's modality_roles that only CEMG used to read.
    saved = dict(checkpoint["config"])
    apply_aliases(saved, model=saved["model"])
    config = Config(
        model=saved["model"],
        dataset=saved["dataset"],
        config_dict=dict(checkpoint["config_overrides"]),
        overrides={},
    )
    for key, value in saved.items():
        if key in RUNTIME_KEYS:
            continue
        if key == "data_path" and not Path(value).is_dir():
            continue  # moved to another machine: the dataset is where this Config finds it
        config[key] = value
    return config


def last_checkpoint_file(best_file: str | Path) -> str:
    """The resume file written beside a run's best checkpoint."""
    best = str(best_file)
    return (best[: -len(".pth")] if best.endswith(".pth") else best) + "-last.pth"


def resume_fix(resume_file: str | Path) -> str:
    """How to go on when ``resume_file`` cannot be read: the run's best checkpoint, or anew."""
    name = str(resume_file)
    best = Path(name[: -len("-last.pth")] + ".pth") if name.endswith("-last.pth") else None
    if best is not None and best.is_file():
        return (
            f"Continue from the run's best checkpoint instead (resume_file={best}: training "
            f"goes on after its best epoch, though not bit-for-bit as the interrupted run "
            f"would have), or start over without resume_file."
        )
    folder = Path(name).parent
    others = sorted(str(p) for p in folder.glob("*.pth") if str(p) != name)[:5]
    where = f" Checkpoints in {folder}: {', '.join(others)}." if others else ""
    return f"Start over without resume_file, or set resume_file to another checkpoint.{where}"


def read_resume_file(resume_file: str | Path, *, map_location: Any = None) -> dict:
    """A resume checkpoint (recbole_mm format only); errors say how to continue."""
    if not Path(resume_file).is_file():
        raise CheckpointError(
            f"resume_file={resume_file} does not exist. {resume_fix(resume_file)}"
        )
    return read_checkpoint(
        resume_file, map_location=map_location, trusted=False, fix=resume_fix(resume_file)
    )


class SafeCheckpointMixin:
    """Weights-only checkpoints, an every-epoch resume file, and CPU DDP for a RecBole trainer.

    Put it first among the bases. Trainers that write extra checkpoints (per stage, say) call
    :meth:`checkpoint_state` for the common part and add tensors/plain values to it.
    """

    def __init__(self, config, model):
        cpu_ddp = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_ddp:
            # AbstractTrainer passes device_ids=[rank], which torch refuses for CPU modules.
            config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(self.model)
        if not config["single_spec"]:
            names = [self.saved_model_file]
            dist.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]
        self._train_generator = None
        self._pending_random_states = None
        self._resumed_epoch = None

    # -- writing -------------------------------------------------------------------------
    @property
    def last_model_file(self) -> str:
        return last_checkpoint_file(self.saved_model_file)

    def checkpoint_state(self, epoch: int) -> dict:
        """The weights-only content common to every checkpoint this trainer writes."""
        return {
            "format": FORMAT,
            "config": plain_config(self.config),
            "config_overrides": to_plain(self.config.external_config_dict, "config_overrides"),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": to_plain(dict(self.best_valid_result or {}), "best_valid_result"),
            "state_dict": self.model.state_dict(),
            "other_parameter": to_plain(self.model.other_parameter(), "other_parameter"),
            "optimizer": self.optimizer.state_dict(),
        }

    def _is_writer(self) -> bool:
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self._is_writer():
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(self.checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def save_resume_state(self, epoch: int) -> None:
        """Write the resume file: the state after ``epoch`` (trained and validated)."""
        if not self._is_writer():
            return
        state = self.checkpoint_state(epoch)
        state["best_model_file"] = str(self.saved_model_file)
        state["train_loss"] = {int(k): float(v) for k, v in self.train_loss_dict.items()}
        state["random_states"] = random_states(self._train_generator)
        save_checkpoint(state, self.last_model_file)

    # -- hooks into RecBole's fit loop -----------------------------------------------------
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, **kwargs):
        self._train_generator = getattr(train_data, "generator", None)
        self._save_resume = saved
        if self._pending_random_states is not None:
            set_random_states(self._pending_random_states, self._train_generator)
            self._pending_random_states = None
        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, **kwargs)
        if saved and self.train_loss_dict:
            self.save_resume_state(max(self.train_loss_dict))
        return result

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        # The state at the start of an epoch is the state after the previous one, validated:
        # RecBole's loop has no end-of-epoch hook, so the resume file is written here.
        if getattr(self, "_save_resume", False) and epoch_idx - 1 in self.train_loss_dict:
            self.save_resume_state(epoch_idx - 1)
        return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and not self.config["single_spec"]:
            dist.barrier()  # rank 0 may still be writing the best checkpoint
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)

    # -- reading ---------------------------------------------------------------------------
    def resume_checkpoint(self, resume_file):
        """Continue from a ``-last.pth`` file (exact), or from any checkpoint as RecBole does."""
        checkpoint = read_resume_file(resume_file, map_location=self.device)
        if not is_plain_checkpoint(checkpoint) or "epoch" not in checkpoint:
            raise CheckpointError(
                f"resume_file={resume_file} {describe_foreign_checkpoint(checkpoint, RESUME_NEEDS)}"
            )
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            raise ValueError(
                f"resume_file={resume_file} holds a {checkpoint['config']['model']} model, "
                f"not {self.config['model']}: resume with the model that wrote it."
            )
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result") or None
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.saved_model_file = checkpoint.get("best_model_file", str(resume_file))
        self.train_loss_dict.update(checkpoint.get("train_loss", {}))
        self._pending_random_states = checkpoint.get("random_states")
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


def join_process_group(config, local_rank: int) -> None:
    """Make ``config`` (built as one process) one rank of a DDP run, and join its group.

    RecBole's ``Config`` does this itself when ``local_rank`` is in its settings, but with
    ``backend="nccl"`` and ``cuda:<rank>`` hard-coded, so it cannot run on CPU. Here the backend
    follows the device: NCCL on CUDA (as RecBole), gloo on CPU. The keys are RecBole's:
    ``nproc``, ``world_size``, ``ip``, ``port``, ``offset`` (the rank of this machine's first
    process), ``gpu_id`` (one id per local process).
    """
    cuda = config["device"].type == "cuda"
    if cuda and len(str(config["gpu_id"]).split(",")) < config["nproc"]:
        raise ValueError(
            f"gpu_id={config['gpu_id']!r} names fewer GPUs than nproc={config['nproc']}: "
            f"give one id per process, e.g. gpu_id='0,1'."
        )
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        rank=local_rank + config["offset"],
        world_size=config["world_size"],
        init_method=f"tcp://{config['ip']}:{config['port']}",
    )
    config["local_rank"] = local_rank
    config["single_spec"] = False
    if cuda:
        config["device"] = torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    # RecBole creates these folders by check-then-create, which races between the ranks.
    Path(config["checkpoint_dir"]).mkdir(parents=True, exist_ok=True)
    Path("log", config["model"]).mkdir(parents=True, exist_ok=True)
    if local_rank != 0:
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


_COMPOSED: dict[tuple[type, type], type] = {}


def mixin_in_front(mixin: type, trainer_class: type) -> type:
    """``trainer_class`` with ``mixin`` in front: same name and docstring, one class per pair.

    Used by :func:`with_safe_checkpoints` and by the benchmark's
    :func:`recbole_mm.experiments.timer.with_timer`; composing both gives one class whose
    methods call down the chain, with nothing patched on an instance or on RecBole's classes.
    """
    if issubclass(trainer_class, mixin):
        return trainer_class
    if (mixin, trainer_class) not in _COMPOSED:
        _COMPOSED[mixin, trainer_class] = type(
            trainer_class.__name__,
            (mixin, trainer_class),
            {"__module__": mixin.__module__, "__doc__": trainer_class.__doc__},
        )
    return _COMPOSED[mixin, trainer_class]


def _manages_own_checkpoints(trainer_class: type) -> bool:
    from recbole.trainer import Trainer

    return not issubclass(trainer_class, Trainer) or any(
        getattr(trainer_class, name) is not getattr(Trainer, name)
        for name in ("fit", "_save_checkpoint", "resume_checkpoint")
    )


def with_safe_checkpoints(trainer_class: type) -> type:
    """``trainer_class`` with :class:`SafeCheckpointMixin` in front (same name; cached).

    Trainers that write or read checkpoints their own way (their own ``fit``,
    ``_save_checkpoint`` or ``resume_checkpoint``: RecBole's pre-training trainers, a
    multi-stage trainer) are returned unchanged: such a trainer inherits the mixin itself,
    where its own methods can call the mixin's.
    """
    if issubclass(trainer_class, SafeCheckpointMixin) or _manages_own_checkpoints(trainer_class):
        return trainer_class
    return mixin_in_front(SafeCheckpointMixin, trainer_class)
