"""Entry points: train and evaluate one model, objective for hyper-parameter search, reload.

They follow ``recbole.quick_start`` (same arguments, same returned dictionaries) and use
recbole_mm's Config, model/trainer lookup and datasets, so RecBole's baselines and our models
run through the same code.
"""

from __future__ import annotations

import logging
import sys
from logging import getLogger

import torch
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_mm.config import Config
from recbole_mm.trainer.checkpoint import (
    CheckpointError,
    describe_foreign_checkpoint,
    is_plain_checkpoint,
    join_process_group,
    load_config,
    read_checkpoint,
    with_safe_checkpoints,
)
from recbole_mm.utils import create_dataset, data_preparation, get_model, get_trainer


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None, *, overrides=None):
    """Config, dataset and the three dataloaders of one run (seeded, logger initialised).

    ``overrides`` are the command line's settings (:func:`recbole_mm.config.parse_overrides`;
    see :class:`recbole_mm.config.Config`). With ``local_rank`` in ``config_dict`` the process
    joins a DDP group (gloo on CPU).
    """
    config_dict = dict(config_dict or {})
    local_rank = config_dict.pop("local_rank", None)
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
        overrides=overrides,
    )
    if local_rank is not None:
        join_process_group(config, local_rank)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    tuned = getattr(config, "tuned_file", None)
    if tuned:
        logger.info(
            f"{config['model']} on {config['dataset']}: settings chosen on validation read from "
            f"{tuned} (tuned_settings=False runs the model's defaults, the paper's method)."
        )
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


def build(config, train_data, *, wrap_trainer=None):
    """The model (on ``config['device']``) and its trainer, seeded as RecBole seeds them.

    The trainer writes weights-only checkpoints and a resume file every epoch
    (:mod:`recbole_mm.trainer.checkpoint`); with ``resume_file`` set it continues that run.
    ``wrap_trainer``, if given, composes the trainer class before it is built (the benchmark
    passes :func:`recbole_mm.experiments.timer.with_timer`).
    """
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    getLogger().info(model)
    trainer_class = with_safe_checkpoints(get_trainer(config["MODEL_TYPE"], config["model"]))
    if wrap_trainer is not None:
        trainer_class = wrap_trainer(trainer_class)
    trainer = trainer_class(config, model)
    if config["resume_file"]:
        trainer.resume_checkpoint(config["resume_file"])
    return model, trainer


def run_recbole_mm(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, *, overrides=None
) -> dict:
    """Train ``model`` on ``dataset``, select on validation, evaluate on test.

    ``overrides``: the command line's settings, above ``config_dict``
    (:func:`recbole_mm.config.parse_overrides`; see :class:`recbole_mm.config.Config`).

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}``
        as ``recbole.quick_start.run_recbole`` does. With ``saved=True`` the best checkpoint
        (by validation) is written to ``checkpoint_dir`` and reloaded for the test evaluation.
        With ``nproc`` > 1 (or ``world_size`` > 0) in the settings, it trains with DDP
        (see :func:`run`) and returns rank 0's result.
    """
    if "local_rank" not in (config_dict or {}):
        settings = Config(model, dataset, config_file_list, config_dict, overrides=overrides)
        if (settings["nproc"] or 1) > 1 or (settings["world_size"] or -1) > 0:
            return run(
                model,
                dataset,
                config_file_list,
                config_dict,
                saved,
                nproc=settings["nproc"] or 1,
                world_size=settings["world_size"] or -1,
                ip=settings["ip"] or "localhost",
                port=str(settings["port"] or "5678"),
                group_offset=settings["offset"] or 0,
                overrides=overrides,
            )
    config, _, train_data, valid_data, test_data = prepare(
        model, dataset, config_file_list, config_dict, overrides=overrides
    )
    _, trainer = build(config, train_data)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    logger = getLogger()
    logger.info("The running environment:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }


def run(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
    *,
    overrides=None,
):
    """``recbole.quick_start.run`` for recbole_mm: one process, or ``nproc`` DDP processes.

    Each of the ``nproc`` processes on this machine is one rank (``group_offset`` + its local
    rank) of ``world_size`` (default ``nproc``) ranks that meet at ``ip:port``; on CPU they
    talk over gloo, on GPUs over NCCL (``gpu_id`` lists one GPU per process). Returns rank
    0's result (None on machines that do not hold rank 0). ``overrides`` as in
    :func:`run_recbole_mm`.
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_mm(
            model, dataset, config_file_list, config_dict, saved, overrides=overrides
        )
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    config_dict = {
        **(config_dict or {}),
        "world_size": world_size,
        "ip": ip,
        "port": port,
        "nproc": nproc,
        "offset": group_offset,
    }
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(
        _run_rank,
        args=(model, dataset, config_file_list, config_dict, saved, overrides, queue),
        nprocs=nproc,
        join=True,
    )
    return None if queue.empty() else queue.get()


def _run_rank(rank, model, dataset, config_file_list, config_dict, saved, overrides, queue):
    result = run_recbole_mm(
        model,
        dataset,
        config_file_list,
        {**config_dict, "local_rank": rank},
        saved,
        overrides=overrides,
    )
    if rank == 0 and config_dict["offset"] == 0:
        queue.put(result)


def objective_function(
    config_dict=None, config_file_list=None, saved=True, *, overrides=None
) -> dict:
    """One trial for ``recbole.trainer.HyperTuning``: select on validation, report test beside it.

    ``overrides`` as in :func:`run_recbole_mm`.
    """
    config = Config(config_dict=config_dict, config_file_list=config_file_list, overrides=overrides)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    _, trainer = build(config, train_data)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=False, saved=saved
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }


def load_data_and_model(model_file: str, *, trusted: bool = True):
    """Reload a checkpoint written by a run: ``(config, model, dataset, train, valid, test)``.

    recbole_mm's checkpoints are read with ``torch.load(weights_only=True)``. Checkpoints
    written by RecBole's own trainers pickle the Config, and unpickling can run code: they are
    read only with ``trusted=True`` (the default, as in RecBole; pass False to refuse them).
    """
    checkpoint = read_checkpoint(model_file, trusted=trusted)
    if is_plain_checkpoint(checkpoint):
        config = load_config(checkpoint)
    elif isinstance(checkpoint, dict) and "config" in checkpoint and "state_dict" in checkpoint:
        config = checkpoint["config"]
    else:
        raise CheckpointError(f"{model_file} {describe_foreign_checkpoint(checkpoint)}")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
