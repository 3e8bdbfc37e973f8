"""One measured run of one model with one seed: train, select on validation, test.

:func:`measure_run` is what a benchmark worker process runs (``python -m recbole_mm.benchmark
--worker <spec.json>``): it builds the trainer with :class:`recbole_mm.experiments.timer.
TimedTrainerMixin` in front, and returns metrics, per-phase timings, peak memory and the hash
of the test split (:func:`split_hash`) as one JSON-serialisable record.
"""

from __future__ import annotations

import hashlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence

from recbole_mm.experiments.timer import float_metrics, with_timer


def split_hash(dataset) -> tuple[str, int]:
    """SHA-256 of a split's sorted (user, item) pairs, in original ids, and the pair count.

    Original tokens rather than RecBole's internal ids, so that two dataset classes that remap
    ids differently still agree when they hold the same interactions. For sequential datasets the
    item is the target item of each augmented row, which leave-one-out makes the user's last item.

    Args:
        dataset: a RecBole ``Dataset`` (``test_data._dataset``).
    """
    uid, iid = dataset.uid_field, dataset.iid_field
    users = dataset.id2token(uid, dataset.inter_feat[uid].numpy())
    items = dataset.id2token(iid, dataset.inter_feat[iid].numpy())
    pairs = sorted(zip(map(str, users), map(str, items)))
    digest = hashlib.sha256()
    for user, item in pairs:
        digest.update(f"{user}\t{item}\n".encode())
    return digest.hexdigest(), len(pairs)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure_run(
    model: str,
    dataset: str,
    *,
    seed: int,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Train one model with one seed, select on validation, test; return every measurement.

    Meant to run alone in a fresh process (``--worker``): the peak RSS it reports is the
    process's, data loading included.

    Args:
        model: model name.
        dataset: dataset name.
        seed: RecBole's ``seed`` (split shuffling, initialisation, sampling).
        config_file_list: YAML files, lowest precedence of the user's settings.
        config_dict: configuration applied over the files.
        overrides: ``--key=value`` (or ``--key value``) strings, the command line's layer
            (highest precedence), parsed by :func:`recbole_mm.config.parse_overrides`.

    Returns:
        A JSON-serialisable dict; docs/benchmark.md describes its keys.
    """
    import torch

    from recbole_mm.config import parse_overrides
    from recbole_mm.quick_start import build, prepare

    started = time.perf_counter()
    config, _, train_data, valid_data, test_data = prepare(
        model,
        dataset,
        list(config_file_list or []) or None,
        {**(config_dict or {}), "seed": seed},
        overrides=parse_overrides(overrides),
    )
    data_s = time.perf_counter() - started
    device = torch.device(config["device"])
    on_gpu = device.type == "cuda"
    test_hash, n_test_pairs = split_hash(test_data._dataset)

    net, trainer = build(config, train_data, wrap_trainer=with_timer)
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    timer = trainer.timings
    show_progress = config["show_progress"]
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=True, show_progress=show_progress
    )
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=show_progress)
    test_s = timer.test_s[-1] if timer.test_s else None
    long_tail = (
        _long_tail(config, trainer, train_data, valid_data, test_data) if test_result else {}
    )
    if test_result and config["new_item_ratio"] is not None:
        long_tail.update(_new_items(config, trainer, valid_data, test_data))
    return {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "status": "ok",
        "error": None,
        "model_type": config["MODEL_TYPE"].name,
        "device": str(device),
        "valid_metric": config["valid_metric"].lower(),
        "best_valid_score": float(best_valid_score),
        "best_valid_result": float_metrics(best_valid_result),
        "test_result": float_metrics(test_result),
        "epochs": len(timer.train_s),
        "train_s_per_epoch": _mean(timer.train_s),
        "train_epoch_s": timer.train_s,
        "train_loss": timer.train_loss,
        "valid_s_mean": _mean(timer.valid_s),
        "valid_s": timer.valid_s,
        "test_s": test_s,
        "valid_curve": timer.curve,
        "data_s": data_s,
        "total_s": time.perf_counter() - started,
        "n_params": n_params,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
        # On, it slows every backward pass. RecBole's sine.py switches it on at import, which
        # compat.undo_sine_anomaly_detection undoes; recorded to catch any other such import.
        "anomaly_detection": torch.is_anomaly_enabled(),
        "split_hash": test_hash,
        "n_test_pairs": n_test_pairs,
        "eval_args": json.loads(json.dumps(config["eval_args"], default=str)),
        "benchmark_filename": config["benchmark_filename"],
        "checkpoint": trainer.saved_model_file,
        **long_tail,
    }


def _long_tail(config, trainer, train_data, valid_data, test_data) -> dict:
    """RecBole's metrics of the selected model on the long-tail pairs of validation and test
    (:func:`recbole_mm.evaluation.evaluate_long_tail`); nothing when the key is ~."""
    from recbole_mm.evaluation import LONG_TAIL_KEY, evaluate_long_tail

    limit = config[LONG_TAIL_KEY]
    if limit is None:
        return {}
    valid = evaluate_long_tail(trainer, train_data, valid_data, limit)
    test = evaluate_long_tail(trainer, train_data, test_data, limit)
    return {
        LONG_TAIL_KEY: limit,
        "valid_tail_result": valid["result"],
        "test_tail_result": test["result"],
        "tail_pairs": {"valid": valid["n_pairs"], "test": test["n_pairs"]},
        "tail_users": {"valid": valid["n_users"], "test": test["n_users"]},
    }


def _new_items(config, trainer, valid_data, test_data) -> dict:
    """RecBole's metrics of the selected model on the new items of a strict new-item split
    (``new_item_ratio``), ranked among all items and among the new items only."""
    from recbole_mm.evaluation import evaluate_new_items

    out = {"new_item_ratio": config["new_item_ratio"], "new_item_pairs": {}}
    for part, loader in (("valid", valid_data), ("test", test_data)):
        report = evaluate_new_items(trainer, loader)
        out[f"{part}_new_all_result"] = report["all"]["result"]
        out[f"{part}_new_new_result"] = report["new"]["result"]
        out["new_item_pairs"][part] = report["all"]["n_pairs"]
    return out
