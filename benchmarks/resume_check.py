"""Interrupt a run after some epochs, resume it from its -last.pth file, compare with a full run.

    nice -n 10 python benchmarks/resume_check.py --model=VBPR --dataset=ml-100k-mm --epochs=4 --stop_after=2

Prints the best validation and test results of both runs and whether every weight is equal.
Checkpoints go under benchmark_results/resume_check/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _run(model, dataset, config_dict, stop_after=None):
    from recbole_mm.quick_start import build, prepare

    config, _, train_data, valid_data, test_data = prepare(
        model, dataset, None, config_dict, overrides={}
    )
    net, trainer = build(config, train_data)
    if stop_after is not None:
        calls, loss = {"n": 0}, net.calculate_loss

        def interrupted(interaction):
            calls["n"] += 1
            if calls["n"] > stop_after * len(train_data) + 1:  # mid-epoch, as a killed job
                raise KeyboardInterrupt
            return loss(interaction)

        net.calculate_loss = interrupted
        try:
            trainer.fit(train_data, valid_data, saved=True)
        except KeyboardInterrupt:
            return trainer.last_model_file
        raise RuntimeError("the run was not interrupted: raise --epochs")
    _, best_valid = trainer.fit(train_data, valid_data, saved=True)
    test = trainer.evaluate(test_data, load_best_model=True)
    return best_valid, test, net.state_dict()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="VBPR")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--stop_after", type=int, default=2)
    parser.add_argument("--out", default="benchmark_results/resume_check")
    args, rest = parser.parse_known_args(argv)
    from recbole_mm.config import parse_overrides

    settings = {**parse_overrides(rest), "epochs": args.epochs, "show_progress": False}
    out = Path(args.out).resolve()
    full = _run(args.model, args.dataset, {**settings, "checkpoint_dir": str(out / "full")})
    part = {**settings, "checkpoint_dir": str(out / "resumed")}
    last = _run(args.model, args.dataset, part, stop_after=args.stop_after)
    resumed = _run(args.model, args.dataset, {**part, "resume_file": last})
    same = all(torch.equal(v, resumed[2][k]) for k, v in full[2].items())
    report = {
        "uninterrupted": {"best_valid": dict(full[0]), "test": dict(full[1])},
        "resumed": {"best_valid": dict(resumed[0]), "test": dict(resumed[1])},
        "identical_weights": same,
    }
    print(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
