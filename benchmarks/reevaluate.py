"""Score saved checkpoints again under other evaluation-time settings, validation beside test.

Each checkpoint is reloaded with its own configuration, split and seed
(``recbole_mm.quick_start.load_data_and_model``); for every ``--setting`` the model is built
again with that setting applied to the configuration, given the checkpoint's weights, and
evaluated on the validation and the test split with RecBole's trainer. Only settings that change
how a trained model scores make sense here (e.g. GTC's ``gtc_eval_sampler``,
``diffusion_eval_steps``; CEMG's ``beam_size``)::

    python benchmarks/reevaluate.py <GTC checkpoints> --setting="--gtc_eval_sampler=ddim" \\
        --setting="--gtc_eval_sampler=ddpm"

Prints one row per checkpoint and setting (choose on the validation column) and writes them to
``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from recbole_mm.experiments.results import pipe_table, write_output


def reevaluate(checkpoint: str, settings: list[dict]) -> list[dict]:
    """Validation and test results of ``checkpoint`` under each of ``settings``."""
    from recbole.utils import init_seed

    from recbole_mm.quick_start import load_data_and_model
    from recbole_mm.utils import get_model, get_trainer

    config, trained, _, train_data, valid_data, test_data = load_data_and_model(checkpoint)
    saved = dict(config.final_config_dict)  # each setting applies to the checkpoint's own
    rows = []
    for setting in settings:
        config.final_config_dict = {**saved, **setting}
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        model.load_state_dict(trained.state_dict())
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        row = {
            "checkpoint": checkpoint,
            "setting": setting,
            "seed": config["seed"],
            "valid_metric": config["valid_metric"].lower(),
        }
        for split, data in (("valid", valid_data), ("test", test_data)):
            init_seed(config["seed"], config["reproducibility"])  # samplers draw the same noise
            start = time.perf_counter()
            result = trainer.evaluate(data, load_best_model=False, show_progress=False)
            row[f"{split}_s"] = time.perf_counter() - start
            row[split] = {k: float(v) for k, v in result.items()}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--setting", action="append", required=True, help="'--key=value ...'")
    parser.add_argument("--metric", default="", help="column to print (default: valid_metric)")
    parser.add_argument("--out", default="benchmark_results/reevaluate.json")
    args = parser.parse_args(argv)

    from recbole_mm.config import parse_overrides

    settings = [parse_overrides(shlex.split(text)) for text in args.setting]
    rows = [row for path in args.checkpoints for row in reevaluate(path, settings)]
    metric = args.metric.lower() or None
    table = []
    for row in rows:
        name = metric or row["valid_metric"]
        table.append(
            [
                Path(row["checkpoint"]).name,
                row["seed"],
                row["setting"],
                f"{name} {row['valid'][name]:.4f}",
                f"{row['test'][name]:.4f}",
                f"{row['valid_s']:.2f}",
            ]
        )
    print(pipe_table(["checkpoint", "seed", "setting", "valid", "test", "valid s"], table))
    write_output(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
