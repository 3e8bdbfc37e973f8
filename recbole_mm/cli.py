"""``run_recbole_mm.py``: train and evaluate one model on one dataset, RecBole-style.

Any other ``--key=value`` (or ``--key value``) argument overrides a configuration key, as with
RecBole's ``run_recbole.py``; they are parsed here, once, and handed to the Config. Errors in the
user's input (settings, files, checkpoints: ``ValueError`` and ``FileNotFoundError`` with a
message that names the problem) end the run with that message alone; set
``RECBOLE_MM_TRACEBACK=1`` to see the traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

DEFAULT_MODEL = "GTC"
DEFAULT_DATASET = "ml-100k-mm"


def _parser(models: list[str], datasets: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_mm.py",
        allow_abbrev=False,  # --config_file=x (a RecBole key) is not --config_files
        description=(
            "Train and evaluate a recommender with RecBole's trainer and evaluator. "
            "Other --key=value arguments override configuration keys (e.g. --epochs=5)."
        ),
        epilog=(
            f"recbole_mm models: {', '.join(models)}. Any RecBole model works too "
            f"(BPR, LightGCN, SASRec, GRU4Rec, BERT4Rec, ...). Datasets with shipped "
            f"properties: {', '.join(datasets)}; any folder of RecBole atomic files under "
            f"--data_path works too."
        ),
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help="dataset name")
    parser.add_argument(
        "--config_files", default=None, help="space-separated YAML files, applied in order"
    )
    parser.add_argument("--saved", default="True", help="save and reload the best checkpoint")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from recbole_mm.properties import configured_datasets
    from recbole_mm.utils import UnknownModelError, get_model, recbole_mm_models

    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(sorted(recbole_mm_models()), configured_datasets())
    args, overrides = parser.parse_known_args(argv)
    try:
        get_model(args.model)
    except UnknownModelError as err:
        parser.error(str(err))
    from recbole_mm.config import ConfigError, parse_overrides
    from recbole_mm.quick_start import run_recbole_mm

    try:
        overrides = parse_overrides(overrides)
    except ConfigError as err:
        parser.error(str(err))
    config_files = args.config_files.split() if args.config_files else None
    with user_errors(parser.prog):
        return run_recbole_mm(
            model=args.model,
            dataset=args.dataset,
            config_file_list=config_files,
            saved=args.saved.lower() not in {"false", "0", "no"},
            overrides=overrides,
        )


@contextlib.contextmanager
def user_errors(prog: str):
    """End the process with ``prog: error: <message>`` (exit status 1) on an error in the
    user's input, whose message says what is wrong and what to do; the traceback is shown
    only with ``RECBOLE_MM_TRACEBACK=1``."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("RECBOLE_MM_TRACEBACK"):
            raise
        sys.stderr.write(f"{prog}: error: {error}\n")
        raise SystemExit(1) from None
