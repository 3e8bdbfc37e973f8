"""Entry points: train and evaluate one model, objective for hyper-parameter search, reload.

They follow ``recbole.quick_start`` (same arguments, same returned dictionaries) and use
recbole_mm's Config, model/trainer lookup and datasets, so RecBole's baselines and our models
run through the same code.
"""

from __future__ import annotations

import logging
import sys
from logging import getLogger

from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_mm.config import Config
from recbole_mm.trainer.checkpoint import (
    is_plain_checkpoint,
    load_config,
    read_checkpoint,
    with_safe_checkpoints,
)
from recbole_mm.utils import create_dataset, data_preparation, get_model, get_trainer


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None):
    """Config, dataset and the three dataloaders of one run (seeded, logger initialised)."""
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


def build(config, train_data):
    """The model (on ``config['device']``) and its trainer, seeded as RecBole seeds them.

    The trainer writes weights-only checkpoints and a resume file every epoch
    (:mod:`recbole_mm.trainer.checkpoint`); with ``resume_file`` set it continues that run.
    """
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    getLogger().info(model)
    trainer_class = with_safe_checkpoints(get_trainer(config["MODEL_TYPE"], config["model"]))
    trainer = trainer_class(config, model)
    if config["resume_file"]:
        trainer.resume_checkpoint(config["resume_file"])
    return model, trainer


def run_recbole_mm(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True
) -> dict:
    """Train ``model`` on ``dataset``, select on validation, evaluate on test.

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}``
        as ``recbole.quick_start.run_recbole`` does. With ``saved=True`` the best checkpoint
        (by validation) is written to ``checkpoint_dir`` and reloaded for the test evaluation.
    """
    config, _, train_data, valid_data, test_data = prepare(
        model, dataset, config_file_list, config_dict
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
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }


def objective_function(config_dict=None, config_file_list=None, saved=True) -> dict:
    """One trial for ``recbole.trainer.HyperTuning``: select on validation, report test beside it."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
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
    else:
        config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
