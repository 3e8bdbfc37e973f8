"""The benchmark runner: protocol rule, reports, timing wrappers, real runs (function and CLI)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, tiny_config

from recbole_mm import benchmark
from recbole_mm.benchmark import (
    LOO_EVAL_ARGS,
    RATIO_EVAL_ARGS,
    check_splits,
    markdown_report,
    plot_valid_curves,
    resolve_protocol,
    run_benchmark,
    summarise,
    write_csv,
)
from recbole_mm.experiments.results import markdown_table
from recbole_mm.experiments.timer import TimedTrainerMixin, with_timer
from recbole_mm.utils import UnknownModelError

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_protocol_rule():
    general, mixed = (
        {"BPR": "GENERAL", "VBPR": "GENERAL"},
        {"BPR": "GENERAL", "SASRec": "SEQUENTIAL"},
    )
    assert resolve_protocol(general) == ("dataset", None)
    assert resolve_protocol({"SASRec": "SEQUENTIAL"}) == ("dataset", None)
    assert resolve_protocol(mixed) == ("loo", LOO_EVAL_ARGS)
    assert resolve_protocol(mixed, "dataset") == ("dataset", None)
    assert resolve_protocol(general, "ratio") == ("ratio", RATIO_EVAL_ARGS)
    # The user's own eval_args win over the automatic switch, and conflict with a forced one.
    assert resolve_protocol(mixed, eval_args_given=True) == ("dataset", None)
    with pytest.raises(ValueError, match="eval_args"):
        resolve_protocol(mixed, "loo", eval_args_given=True)
    with pytest.raises(ValueError, match="protocol='nope'"):
        resolve_protocol(mixed, "nope")


def _record(model, seed, ndcg, split="h1", **extra):
    return {
        "model": model,
        "seed": seed,
        "status": "ok",
        "device": "cpu",
        "valid_metric": "ndcg@10",
        "best_valid_score": ndcg + 0.1,
        "best_valid_result": {"ndcg@10": ndcg + 0.1},
        "test_result": {"recall@10": 2 * ndcg, "ndcg@10": ndcg},
        "train_s_per_epoch": 1.0,
        "valid_s_mean": 0.5,
        "test_s": 0.5,
        "peak_rss_mb": 500.0,
        "peak_gpu_mb": None,
        "n_params": 1000,
        "epochs": 3,
        "split_hash": split,
        "eval_args": LOO_EVAL_ARGS,
        "valid_curve": [{"epoch": e, "score": ndcg * e / 3} for e in (1, 2, 3)],
        **extra,
    }


def test_reports_from_run_records(tmp_path):
    runs = [
        _record("A", 1, 0.10),
        _record("B", 1, 0.20),
        _record("C", 1, 0.30),
        _record("A", 2, 0.20),
        _record("B", 2, 0.30),
        _record("C", 2, 0.40, split="h2", anomaly_detection=True),
        {"model": "D", "seed": 1, "status": "failed", "error": "boom"},
    ]
    splits = check_splits(runs)
    assert splits[1]["consistent"] and splits[2]["odd"] == ["C"]
    assert check_splits([_record("A", 1, 0.1, "x"), _record("B", 1, 0.1, "y")])[1]["odd"] == [
        "A",
        "B",
    ]  # a tie has no majority to compare against: both are flagged

    rows = summarise(runs)
    assert [r["model"] for r in rows] == ["A", "B", "C", "D"]
    mean, std = rows[0]["test"]["ndcg@10"]
    assert mean == pytest.approx(0.15) and std == pytest.approx(0.0707107, rel=1e-5)
    report = markdown_report(rows, runs, dataset="toy", protocol="loo")
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[1:3] == ["test recall@10", "test ndcg@10"]
    assert "best valid ndcg@10" in table[0] and "split" in table[0]
    assert "| A | 0.3000 ± 0.1414 | 0.1500 ± 0.0707 | 0.2500 ± 0.0707 |" in table[1]
    assert table[1].endswith("| same |") and table[3].endswith("| DIFFERS |")
    assert table[4].startswith("| D | failed")
    assert "seed 2: **test splits differ**" in report and "anomaly detection" in report
    assert "D: failed for seed(s) 1" in report

    write_csv(runs, tmp_path / "r.csv")
    with (tmp_path / "r.csv").open() as file:
        rows_csv = list(csv.DictReader(file))
    assert len(rows_csv) == 7 and rows_csv[0]["test_ndcg@10"] == "0.1"
    plot_valid_curves(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


def test_costs_are_shown_against_the_backbone_in_the_table():
    runs = [
        _record("GTC", 1, 0.2, train_s_per_epoch=6.0, valid_s_mean=2.0),
        _record("LightGCN", 1, 0.2, train_s_per_epoch=2.0, valid_s_mean=0.5),
        _record("SASRec", 1, 0.2, train_s_per_epoch=1.0, valid_s_mean=1.0),
    ]
    table = [line for line in markdown_table(summarise(runs)).splitlines()]
    header = table[0].split(" | ")
    # LightGCN comes first in COST_BACKBONES: it is the yardstick even though SASRec is there.
    at = header.index("s/epoch x LightGCN")
    assert header[at - 1] == "s/epoch" and header[at + 2] == "eval s x LightGCN"
    gtc = table[2].split(" | ")
    assert gtc[at] == "3.00" and gtc[at + 2] == "4.00"
    assert table[4].split(" | ")[at] == "0.50"  # SASRec against LightGCN
    alone = markdown_table(summarise(runs[:1])).splitlines()[0]
    assert "x LightGCN" not in alone and "x SASRec" not in alone


class _FakeTrainer:
    """RecBole's call pattern: fit -> _train_epoch / _valid_epoch -> evaluate."""

    def _train_epoch(self, train_data, epoch_idx, show_progress=False):
        return (1.0, 2.0)

    def _valid_epoch(self, valid_data, show_progress=False):
        result = self.evaluate(valid_data, load_best_model=False)
        return result["ndcg@10"], result

    def evaluate(self, eval_data, load_best_model=True, show_progress=False):
        return {"ndcg@10": 0.25}

    def fit(self, epochs):
        for epoch in range(epochs):
            self._train_epoch(None, epoch)
            if epoch % 2 == 1:
                self._valid_epoch(None)


def test_trainer_timer_is_a_mixin_in_front_of_the_class():
    class_methods = dict(vars(_FakeTrainer))
    timed_class = with_timer(_FakeTrainer)
    assert with_timer(_FakeTrainer) is timed_class and with_timer(timed_class) is timed_class
    assert timed_class.__mro__[1:3] == (TimedTrainerMixin, _FakeTrainer)
    trainer = timed_class()
    trainer.fit(4)
    trainer.evaluate(None)
    timer = trainer.timings
    assert len(timer.train_s) == 4 and timer.train_loss == [3.0] * 4
    assert len(timer.valid_s) == 2 and len(timer.test_s) == 1  # validation is not test
    assert [p["epoch"] for p in timer.curve] == [2, 4]
    assert timer.curve[0] == {"epoch": 2, "score": 0.25, "result": {"ndcg@10": 0.25}}
    # Nothing is patched: not the instance, not the class behind the mixin (RecBole's).
    assert not {"_train_epoch", "_valid_epoch", "evaluate"} & set(vars(trainer))
    assert dict(vars(_FakeTrainer)) == class_methods


def test_trainer_timer_synchronizes_cuda_before_each_clock_read():
    import torch

    class _CudaTrainer(_FakeTrainer):
        def __init__(self):
            self.device = torch.device("cuda", 0)  # as RecBole's Trainer sets it

    assert with_timer(_CudaTrainer)()._synchronize is torch.cuda.synchronize
    assert with_timer(_FakeTrainer)()._synchronize is not torch.cuda.synchronize


def test_unknown_model_fails_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(UnknownModelError, match="NoSuchModel.*BPR"):
        run_benchmark(["BPR", "NoSuchModel"], TINY, out=out)
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--models=BPR,NoSuchModel", f"--out={out}"])
    assert exit_info.value.code == 2 and "Unknown model 'NoSuchModel'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--seeds"):
        run_benchmark(["BPR"], TINY, overrides=["--seed=3"], out=out)
    own_split = tmp_path / "split.yaml"
    own_split.write_text("eval_args:\n  split: {RS: [0.7, 0.2, 0.1]}\n")
    with pytest.raises(ValueError, match="eval_args"):
        run_benchmark(["BPR"], TINY, config_file_list=[str(own_split)], protocol="loo", out=out)
    assert not out.exists()


def _check_outputs(out: Path, models: list[str]) -> dict:
    for name in ("results.json", "results.csv", "results.md", "valid_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "valid_curves.png").read_bytes().startswith(PNG_MAGIC)
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == models
    table = [
        line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert [line.split(" | ")[0] for line in table[1:]] == [f"| {m}" for m in models]
    for run in results["runs"]:
        assert run["status"] == "ok", run.get("error")
        metrics = {**run["test_result"], **run["best_valid_result"]}
        assert set(run["test_result"]) == {"recall@5", "ndcg@5"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert run["n_params"] > 0 and run["peak_rss_mb"] > 0 and run["device"] == "cpu"
        assert len(run["valid_curve"]) == run["epochs"] == len(run["train_epoch_s"])
    return results


def test_overrides_are_parsed_as_on_every_command_line(tmp_path):
    # The --key value form too: here the reserved key is found in it.
    with pytest.raises(ValueError, match="'seed' is set per run by the benchmark: use --seeds"):
        run_benchmark(["BPR"], TINY, overrides=["--seed", "3"], out=tmp_path / "out")
    with pytest.raises(ValueError, match="holds more than one '='"):
        run_benchmark(["BPR"], TINY, overrides=["--data_path=a=b"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_takes_its_overrides_and_leaves_sys_argv_alone(tiny_root, run_in_tmp, monkeypatch):
    stray = ["benchmark", "--epochs=abc"]
    monkeypatch.setattr(sys, "argv", list(stray))
    settings = tiny_config(tiny_root, checkpoint_dir=str(run_in_tmp))
    del settings["modalities"]
    record = benchmark.measure_run(
        "BPR", TINY, seed=2020, config_dict=settings, overrides=["--epochs", "2"]
    )
    assert sys.argv == stray
    assert record["epochs"] == 2


def test_benchmark_function_mixed_models_share_a_leave_one_out_split(tiny_root, run_in_tmp):
    models = ["BPR", "SASRec", "VBPR"]
    result = run_benchmark(
        models,
        TINY,
        config_dict=tiny_config(tiny_root, epochs=2),
        out=run_in_tmp / "bench",
        progress=lambda line: None,
    )
    results = _check_outputs(run_in_tmp / "bench", models)
    assert result["protocol"] == results["protocol"] == "loo"
    runs = results["runs"]
    assert all(r["eval_args"]["split"] == {"LS": "valid_and_test"} for r in runs)
    assert all(r["eval_args"]["order"] == "TO" and r["epochs"] == 2 for r in runs)
    assert len({r["split_hash"] for r in runs}) == 1 and runs[0]["n_test_pairs"] == 40
    assert results["splits"]["2020"]["consistent"]
    assert [p["epoch"] for p in runs[0]["valid_curve"]] == [1, 2]
    assert "every model has the same test split" in result["report"]
    with (run_in_tmp / "bench" / "results.csv").open() as file:
        assert [row["model"] for row in csv.DictReader(file)] == models


def test_cli_flags_differing_splits_under_the_dataset_protocol(tiny_root, tmp_path):
    settings = tiny_config(tiny_root, epochs=1)
    del settings["modalities"]  # BPR and SASRec use no content features
    overrides = [f"--{key}={value}" for key, value in settings.items()]
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_mm.benchmark", f"--dataset={TINY}"]
        + ["--models=BPR,SASRec", "--protocol=dataset", f"--out={out}", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _check_outputs(out, ["BPR", "SASRec"])
    # BPR keeps RecBole's random 8:1:1 split, SASRec its leave-one-out: two test sets.
    bpr, sasrec = results["runs"]
    assert "RS" in bpr["eval_args"]["split"] and "LS" in sasrec["eval_args"]["split"]
    assert bpr["split_hash"] != sasrec["split_hash"]
    assert not results["splits"]["2020"]["consistent"]
    assert "| BPR |" in proc.stdout and "| DIFFERS |" in proc.stdout
    assert "test splits differ" in proc.stdout and "differs" in proc.stderr


def test_merge_results_pools_seeds_from_several_outputs(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"
    spec = importlib.util.spec_from_file_location("merge_results", path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    for name, runs in {
        "a": [_record("SASRec", 1, 0.2), _record("IMECD", 1, 0.1)],
        "b": [_record("SASRec", 2, 0.4), _record("BPR", 2, 0.1), _record("IMECD", 2, 0.3, "h9")],
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"runs": runs}))
    outputs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert merge.main([*outputs, "--metrics=ndcg@10"]) == 0
    table = capsys.readouterr().out
    assert "recall@10" not in table
    sasrec = next(line for line in table.splitlines() if line.startswith("| SASRec"))
    assert "0.3000 ± 0.1414" in sasrec and sasrec.endswith("same |")
    # IMECD's seed-2 run was tested on another split than SASRec's: flagged.
    assert next(line for line in table.splitlines() if "IMECD" in line).endswith("DIFFERS |")
    runs = merge.pooled_runs(outputs, labels=["x", ""], models=["IMECD"])
    assert [r["model"] for r in runs] == ["x", "IMECD"]
    with pytest.raises(SystemExit, match="no results.json"):
        merge.pooled_runs([str(tmp_path)])


def test_merge_results_lists_every_run_with_its_command(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"
    spec = importlib.util.spec_from_file_location("merge_results", path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    out = tmp_path / "a"
    (out / "runs").mkdir(parents=True)
    (out / "results.json").write_text(
        json.dumps({"runs": [_record("BPR", 2020, 0.2), _record("BPR", 2021, 0.4)]})
    )
    (out / "runs" / "BPR-seed2020.spec.json").write_text(
        json.dumps(
            {
                "model": "BPR",
                "dataset": "ml-100k-mm",
                "seed": 2020,
                "config_file_list": [],
                "overrides": ["--epochs=5"],
            }
        )
    )
    assert merge.main([str(out), "--runs", "--metrics=ndcg@10"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| BPR")]
    assert len(rows) == 2
    command = "python -m recbole_mm.benchmark --dataset=ml-100k-mm --models=BPR --seeds=2020"
    assert f"`{command} --epochs=5`" in rows[0] and "0.2000" in rows[0]
    assert rows[1].endswith("|  |")  # no spec file: no command
    relabelled = merge.pooled_runs([str(out)], labels=["BPR-variant"])
    assert relabelled[0]["model"] == "BPR-variant" and relabelled[0]["command"].startswith(command)


def test_eval_cost_times_every_variant_in_interleaved_rounds(tiny_root):
    import importlib.util

    from recbole_mm.smoke import tiny_settings

    path = REPO / "benchmarks" / "eval_cost.py"
    spec = importlib.util.spec_from_file_location("eval_cost", path)
    eval_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_cost)
    common = tiny_config(tiny_root, eval_args=LOO_EVAL_ARGS)
    variants = [
        ("SASRec", common),
        ("CEMG", {**common, **tiny_settings("CEMG"), "generation_backend": "hf"}),
        ("CEMG", {**common, **tiny_settings("CEMG"), "generation_backend": "shared"}),
    ]
    rows = eval_cost.measure(TINY, variants, rounds=2)
    assert [len(row["seconds"]) for row in rows] == [2, 2, 2]
    assert rows[0]["ratio"] == 1.0
    assert all(row["median_s"] > 0 for row in rows)
    with pytest.raises(SystemExit, match="must start with a model name"):
        eval_cost._variant("--hidden_size=8", {})


def test_code_ranks_of_an_id_model_that_knows_the_target_are_all_first():
    import importlib.util

    path = REPO / "benchmarks" / "code_ranks.py"
    spec = importlib.util.spec_from_file_location("code_ranks", path)
    code_ranks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_ranks)
    # Items 1-4 with codes (0,0) (0,1) (1,0) (1,1); row 0 is padding.
    item_codes = torch.tensor([[-1, -1], [0, 0], [0, 1], [1, 0], [1, 1]])
    target = torch.tensor([2, 3])
    scores = torch.full((2, 5), -5.0)
    scores[0, 2] = scores[1, 3] = 5.0  # the model is sure of the target
    scores[:, 0] = 50.0  # the padding column must not count
    per_level = code_ranks.implied_code_log_probs(scores, item_codes, item_codes[target], [2, 2])
    ranks = torch.stack(
        [code_ranks.rank_of(lp, item_codes[target][:, i]) for i, lp in enumerate(per_level)], 1
    )
    assert ranks.tolist() == [[1, 1], [1, 1]]
    # Level 2 only compares items under the target's own first code: item 4 (1,1) outscoring
    # target 3 (1,0) moves its rank to 2 there, and item 1 (0,0) does not.
    scores[1, 4] = 9.0
    scores[1, 1] = 20.0
    per_level = code_ranks.implied_code_log_probs(scores, item_codes, item_codes[target], [2, 2])
    assert code_ranks.rank_of(per_level[1], item_codes[target][:, 1]).tolist() == [1, 2]
    # Level 1 sums over items: code 0 (items 1, 2) now holds more mass than code 1 for user 1.
    assert code_ranks.rank_of(per_level[0], item_codes[target][:, 0]).tolist() == [1, 2]
    summary = code_ranks.summarise(torch.tensor([[1, 2], [3, 1]]))
    assert summary["hit@1"] == [0.5, 0.5] and summary["mrr"][0] == pytest.approx((1 + 1 / 3) / 2)


def test_code_ranks_runs_cemg_against_sasrec_on_one_split(tiny_root):
    import importlib.util

    from conftest import seeded_model, tiny_splits

    from recbole_mm.smoke import tiny_settings

    path = REPO / "benchmarks" / "code_ranks.py"
    spec = importlib.util.spec_from_file_location("code_ranks", path)
    code_ranks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_ranks)
    config, train, valid, _ = tiny_splits(tiny_root, "CEMG", **tiny_settings("CEMG"))
    cemg = seeded_model("CEMG", config, train)
    cemg.assign_codes()
    sas_config, sas_train, _, _ = tiny_splits(tiny_root, "SASRec")
    sasrec = seeded_model("SASRec", sas_config, sas_train)
    gen, ids = code_ranks.code_ranks(cemg, sasrec, valid)
    n_targets = sum(len(batch[0]) for batch in valid)
    assert gen.shape == ids.shape == (n_targets, len(cemg.vocab_sizes))
    # A rank lies between 1 and the number of codes of its level.
    vocab = torch.tensor(cemg.vocab_sizes)
    assert ((gen >= 1) & (gen <= vocab) & (ids >= 1) & (ids <= vocab)).all()


def test_reevaluate_reproduces_a_checkpoint_and_applies_each_setting(tiny_root, run_in_tmp):
    import importlib.util

    from recbole_mm.quick_start import run_recbole_mm
    from recbole_mm.smoke import tiny_settings

    path = REPO / "benchmarks" / "reevaluate.py"
    spec = importlib.util.spec_from_file_location("reevaluate", path)
    reevaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reevaluate)
    config = tiny_config(tiny_root, epochs=2, **tiny_settings("GTC"))
    result = run_recbole_mm(model="GTC", dataset=TINY, config_dict=config, saved=True)
    ddpm, same = reevaluate.reevaluate(result["checkpoint"], [{"gtc_eval_sampler": "ddpm"}, {}])
    # The rebuilt model with the checkpoint's weights scores exactly as the run did.
    assert same["test"] == pytest.approx({k: float(v) for k, v in result["test_result"].items()})
    assert same["valid_metric"] == "ndcg@5" and set(ddpm["valid"]) == set(same["valid"])
    assert ddpm["setting"] == {"gtc_eval_sampler": "ddpm"}
