"""The GPU suite: one prepared command that times every model and the scale benchmarks.

    python benchmarks/gpu_suite.py --out benchmark_results/gpu_suite          # a lent GPU, <= 8 min
    python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/gpu_suite  # tiny, CPU, seconds

Steps, one after the other and never two at once (many processes sharing one GPU were measured
20-100x slower per evaluation), each in its own process with a time limit:

1. ``environment``: device name and memory, Python, torch, CUDA, numpy, scipy, pandas, RecBole.
2. ``gtc_scale``: ``benchmarks/gtc_scale.py`` on the Amazon-Sports-size random graph, GTC and
   RecBole's LightGCN in the same run (s per training batch, evaluation s, their ratio).
3. One step per model, every recbole_mm model of the registry and the references LightGCN and
   SASRec:
   ``recbole_mm.benchmark`` on ml-100k-mm, leave-one-out by time (one split for every model),
   each model's default YAML (its paper sizes), 2 epochs (2 per stage its class declares),
   validation every epoch: s/epoch, validation s, test s, peak GPU MB.
4. ``beam_search``: ``benchmarks/beam_search.py`` at its documented scale (20,000 items,
   3 x 128 codes + a collision level, beam 20), 256 and 1,024 users per batch.
5. ``mmgrec_inference``: ``benchmarks/mmgrec_inference.py`` at docs/models/MMGRec.md's scale
   (Kwai's 86,483 items x 1/16 ... 16). That script has no device option: it runs on the CPU.

Each step gets its own limit, cut to what is left of ``--budget-s`` (default 480 s, counted from
this script's start); a step that cannot get its minimum is skipped, and the table says so.
``gpu_suite.md`` and ``gpu_suite.json`` under ``--out`` are rewritten after every step, so an
interrupted suite still leaves the steps it finished; each step's log is in ``logs/``.

``--smoke`` runs the same steps at tiny sizes (a 40-user dataset written under ``--out``, one
epoch per stage, a few hundred items): the plumbing, not the figures (tests/test_gpu_suite.py).
docs/benchmark.md ("The GPU suite") gives the commands that run it on a lent device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTED = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESERVE_S = 5.0  # kept back at the end for writing the table

REFERENCE_MODELS = ("LightGCN", "SASRec")
COMMON_SETTINGS = {"epochs": 2, "eval_step": 1, "show_progress": False}
# Smoke mode: the tests' tiny sizes (recbole_mm/smoke.py) on a tiny dataset, two cut-offs.
SMOKE_OVERRIDES = {"eval_step": 1, "topk": [5, 10], "valid_metric": "NDCG@10"}
SMOKE_DATASET = "gpu-suite-smoke"


@dataclass
class Step:
    """One step: a command (or a model name for ``recbole_mm.benchmark``) and its time limits."""

    name: str
    kind: str  # environment | script | model
    cap_s: float  # the most this step may take
    min_s: float  # below this much time left the step is skipped
    argv: list[str] = field(default_factory=list)  # script: the script and its arguments
    record: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The plan


def plan(args) -> list[Step]:
    """The fixed list of steps, with their arguments for ``--smoke`` or the full sizes."""
    device = args.device
    if args.smoke:
        gtc = "--scale 0.005 --batches 1 --batch-size 64 --steps 5 --skip-ddpm --eval-users 64"
        beams = [("beam_search", "--items 500 --codebook 16 --batch 16 --repeats 1")]
        mmgrec = "--n-items 300 --fractions 1/2,1 --users 8 --batch-size 4 --single-users 2"
        mmgrec += " --history 4"
        caps = {"environment": 60, "gtc_scale": 90, "model": 120, "beam": 60, "mmgrec": 60}
    else:
        # The DDPM sampler's 300 steps are run in full (a few seconds on a GPU).
        gtc = "--batches 5 --ddpm-steps 0"
        beams = [
            ("beam_search", "--batch 256 --repeats 10"),
            ("beam_search_1024", "--batch 1024 --repeats 10"),
        ]
        mmgrec = "--n-items 86483 --multiples 4,16 --users 128 --batch-size 64 --single-users 8"
        caps = {"environment": 60, "gtc_scale": 150, "model": 75, "beam": 45, "mmgrec": 120}
    steps = [Step("environment", "environment", caps["environment"], 10)]
    steps.append(
        Step(
            "gtc_scale",
            "script",
            caps["gtc_scale"],
            20,
            ["gtc_scale.py", *gtc.split(), "--device", device],
        )
    )
    steps += [Step(model, "model", caps["model"], 20) for model in suite_models()]
    steps += [
        Step(
            name, "script", caps["beam"], 10, ["beam_search.py", *extra.split(), "--device", device]
        )
        for name, extra in beams
    ]
    steps.append(Step("mmgrec_inference", "script", caps["mmgrec"], 20, ["mmgrec_inference.py"]))
    steps[-1].argv += mmgrec.split()
    return steps


def remaining_s(budget_s: float) -> float:
    return budget_s - (time.monotonic() - STARTED) - RESERVE_S


# ---------------------------------------------------------------------------------------------
# Running the steps


def child_env() -> dict:
    """The environment of every child: this checkout importable, installed or not."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def run_command(command: list[str], log: Path, limit_s: float) -> tuple[str, str | None]:
    """Run ``command`` in its own process group; kill the whole group at ``limit_s``."""
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "timeout", f"killed after its {limit_s:.0f} s limit"
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        return "failed", f"exit status {code}: {tail[0] if tail else ''}"[:300]
    return "ok", None


def run_script_step(step: Step, out: Path, limit_s: float) -> None:
    """A benchmarks/ script, through ``--worker script`` (which adds the peak GPU memory)."""
    folder = out / "steps" / step.name
    folder.mkdir(parents=True, exist_ok=True)
    script, *script_args = step.argv
    script_args += ["--out", str(folder / "result.json" if "beam" in script else folder)]
    peak = out / "steps" / f"{step.name}.peak.json"
    command = [sys.executable, __file__, "--worker", "script", str(peak)]
    command += [str(BENCHMARKS / script), *script_args]
    step.record["command"] = " ".join(["python", f"benchmarks/{script}", *script_args])
    status, error = run_command(command, out / "logs" / f"{step.name}.log", limit_s)
    step.record.update(status=status, error=error)
    if peak.is_file():
        step.record["peak_gpu_mb"] = json.loads(peak.read_text())["peak_gpu_mb"]
    try:  # mmgrec_inference writes its results row by row: a timeout still leaves some
        step.record["figures"] = read_script_figures(script, folder)
    except (OSError, ValueError, KeyError) as error:
        if status == "ok":
            step.record.update(status="failed", error=f"no result: {error}")


def read_script_figures(script: str, folder: Path) -> dict:
    if script == "gtc_scale.py":
        (result,) = folder.glob("*.json")
        return json.loads(result.read_text())
    if script == "beam_search.py":
        return json.loads((folder / "result.json").read_text())
    return json.loads((folder / "results.json").read_text())  # mmgrec_inference


def suite_models() -> tuple[str, ...]:
    """Every recbole_mm model of the registry, in name order, then the reference backbones."""
    from recbole_mm.utils import recbole_mm_models

    return (*sorted(recbole_mm_models()), *REFERENCE_MODELS)


def model_settings(model: str, *, smoke: bool) -> dict:
    """``model``'s settings on top of its YAML: every stage it declares for one epoch (smoke:
    with the tests' tiny sizes and common settings, recbole_mm/smoke.py) or two.

    A generative model ranks only its beams: in smoke mode its beams cover the largest top-K.
    Imported here, not at the top: recbole_mm imports RecBole, which only model steps need.
    """
    from recbole_mm.smoke import tiny_common, tiny_settings, tiny_stage_epochs
    from recbole_mm.utils import recbole_mm_models

    model_class = recbole_mm_models().get(model)
    stages = tiny_stage_epochs(model_class, 1 if smoke else 2) if model_class else {}
    if not smoke:
        return {**COMMON_SETTINGS, **stages}
    settings = {**tiny_common(**SMOKE_OVERRIDES), **stages, **tiny_settings(model)}
    if settings.get("beam_size") is not None:
        settings["beam_size"] = max(settings["beam_size"], max(SMOKE_OVERRIDES["topk"]))
    return settings


def run_model_step(step: Step, out: Path, limit_s: float, args, dataset_settings: dict) -> None:
    """One model through ``recbole_mm.benchmark`` (its worker is killed at the limit)."""
    from recbole_mm.benchmark import run_benchmark

    model = step.name
    settings = model_settings(model, smoke=args.smoke)
    if args.device == "cpu":
        settings["use_gpu"] = False
    settings.update(dataset_settings)
    folder = out / "steps" / model
    overrides = " ".join(
        f'"--{k}={v}"' if " " in str(v) else f"--{k}={v}" for k, v in settings.items()
    )
    step.record["command"] = (
        f"python -m recbole_mm.benchmark --dataset={args.dataset} --models={model} "
        f"--protocol=loo {overrides} --out={folder}"
    )
    lines = []
    try:
        # The worker gets the step's limit less 5 s, kept for this process: RecBole's import
        # (first model step only) and the reports.
        result = run_benchmark(
            [model],
            args.dataset,
            config_dict=settings,
            protocol="loo",
            out=folder,
            timeout=max(limit_s - 5, 1),
            progress=lines.append,
        )
    except Exception as error:  # noqa: BLE001 - one model's failure must not end the suite
        step.record.update(status="failed", error=f"{type(error).__name__}: {error}"[:300])
        return
    finally:
        lines.append(f"the worker's own log: {folder / 'runs'}")
        (out / "logs" / f"{model}.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (run,) = result["runs"]
    if run["status"] != "ok":
        error = run["error"].strip().splitlines()
        step.record.update(status="failed", error=" | ".join(error[:1] + error[-1:])[:300])
        return
    keys = (
        "epochs",
        "train_s_per_epoch",
        "train_epoch_s",
        "valid_s_mean",
        "valid_s",
        "test_s",
        "data_s",
        "total_s",
        "n_params",
        "peak_rss_mb",
        "peak_gpu_mb",
        "device",
        "valid_metric",
        "test_result",
        "split_hash",
    )
    step.record.update(status="ok", error=None, figures={k: run.get(k) for k in keys})
    if not str(run.get("device")).startswith(args.device):  # RecBole falls back to the CPU
        step.record.update(status="wrong device", error=f"ran on {run.get('device')}")
    step.record["peak_gpu_mb"] = run.get("peak_gpu_mb")


def write_smoke_dataset(folder: Path) -> dict:
    """A 40-user, 30-item dataset with ml-100k-mm's modality names; its configuration keys."""
    import numpy as np

    from recbole_mm.data.features import save_modality

    rng = np.random.default_rng(0)
    data = folder / SMOKE_DATASET
    data.mkdir(parents=True, exist_ok=True)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(1, 41):
        items = rng.choice(np.arange(1, 31), size=int(rng.integers(6, 12)), replace=False)
        for t, item in enumerate(items):
            rows.append(
                f"u{user}\ti{item}\t{int(rng.integers(1, 6))}\t{1_000_000 + 100 * user + t}"
            )
    (data / f"{SMOKE_DATASET}.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tokens = [f"i{i}" for i in range(1, 31)]
    for name, dim in (("text", 8), ("kg", 6)):
        features = rng.standard_normal((len(tokens), dim))
        save_modality(data, SMOKE_DATASET, name, tokens=tokens, features=features)
    return {
        "data_path": str(folder),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "modalities": {"text": {"dim": 8}, "kg": {"dim": 6, "role": "visual"}},
    }


# ---------------------------------------------------------------------------------------------
# The table


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def key_figures(step: Step) -> str:
    """One cell of the table: the figures that matter for this step."""
    f = step.record.get("figures")
    if not f:
        return step.record.get("error") or ""
    if step.name == "environment":
        return f"{f['device_name']}; torch {f['torch']}, CUDA {f['cuda']}"
    if step.name == "gtc_scale":
        size = f["size"]
        text = (
            f"{size['users']:,} users, {size['items']:,} items; GTC {fmt(f['train']['s_per_batch']['step'], 4)} "
            f"s/batch (epoch {fmt(f['train']['epoch_s_extrapolated'], 1)} s), eval DDIM "
            f"{fmt(f['eval']['ddim']['total_s'], 2)} s"
        )
        if "ddpm" in f["eval"]:
            text += (
                f", DDPM T={f['eval']['ddpm']['steps']} {fmt(f['eval']['ddpm']['total_s'], 2)} s"
            )
        if "lightgcn" in f:
            lg, ratio = f["lightgcn"], f["ratio"]
            text += (
                f"; LightGCN {fmt(lg['s_per_batch'], 4)} s/batch, eval {fmt(lg['eval']['total_s'], 3)} s"
                f"; GTC/LightGCN {fmt(ratio['train_batch_gtc_over_lightgcn'], 1)}x per batch, "
                f"{fmt(ratio['eval_ddim_gtc_over_lightgcn'], 1)}x per eval"
            )
        return text
    if step.kind == "model":
        metric = f.get("valid_metric")
        score = (f.get("test_result") or {}).get(metric)
        return (
            f"{f['epochs']} epoch{'' if f['epochs'] == 1 else 's'}, "
            f"{fmt(f['train_s_per_epoch'])} s/epoch, eval "
            f"{fmt(f['valid_s_mean'])} s, test {fmt(f['test_s'])} s, data {fmt(f['data_s'], 1)} s, "
            f"{fmt(f['n_params'])} params, test {metric} {fmt(score, 4)}"
        )
    if step.name.startswith("beam_search"):
        return (
            f"{f['items']:,} items, {f['batch']} users/batch, beam {f['beam']}: "
            f"{fmt(f['no_exclusion']['users_per_second'], 0)} users/s, "
            f"{fmt(f['with_exclusion']['users_per_second'], 0)} with 50 excluded"
        )
    if step.name == "mmgrec_inference":
        rows = f["rows"]
        picks = [r for r in rows if r["scale"] == "1"][:1] + rows[-1:]
        return "; ".join(
            f"{r['n_items']:,} items: full sort {fmt(r['full_sort_ms'], 3)}, MMGRec "
            f"{fmt(r['mmgrec_excluded_ms'], 2)} ms/user (CPU)"
            for r in dict((r["n_items"], r) for r in picks).values()
        )
    return ""


def peak_cell(step: Step) -> str:
    f = step.record.get("figures") or {}
    if step.name == "gtc_scale" and "lightgcn" in f:
        gtc, lg = f.get("peak_gpu_mb"), f["lightgcn"].get("peak_gpu_mb")
        return "–" if gtc is None else f"GTC {fmt(gtc, 0)}, LightGCN {fmt(lg, 0)}"
    return fmt(step.record.get("peak_gpu_mb"), 0)


def write_report(steps: list[Step], out: Path, args, environment: dict) -> None:
    used = time.monotonic() - STARTED
    env = environment or {}
    head = (
        f"GPU suite ({'smoke' if args.smoke else 'full'}), device `{args.device}`: "
        f"{env.get('device_name', '?')}, Python {env.get('python', '?')}, torch "
        f"{env.get('torch', '?')} (CUDA {env.get('cuda', '–')}), numpy {env.get('numpy', '?')}, "
        f"scipy {env.get('scipy', '?')}, pandas {env.get('pandas', '?')}, RecBole "
        f"{env.get('recbole', '?')}, {env.get('cpus', '?')} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{used:.0f} s of a {args.budget_s:.0f} s budget."
    )
    lines = [
        head,
        "",
        "| step | status | wall s | limit s | key figures | peak GPU MB |",
        "|---|---|---|---|---|---|",
    ]
    for step in steps:
        r = step.record
        cells = [
            step.name,
            r.get("status", "not run"),
            fmt(r.get("wall_s"), 1),
            fmt(r.get("limit_s"), 0),
            key_figures(step).replace("|", "/"),
            peak_cell(step),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [s.name for s in steps if str(s.record.get("status", "")).startswith("skipped")]
    if skipped:
        lines += ["", f"Skipped for lack of budget: {', '.join(skipped)}."]
    (out / "gpu_suite.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {
        "mode": "smoke" if args.smoke else "full",
        "device": args.device,
        "budget_s": args.budget_s,
        "used_s": used,
        "environment": environment,
        "steps": [{"name": s.name, "kind": s.kind, **s.record} for s in steps],
    }
    partial = out / "gpu_suite.json.part"
    partial.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    partial.replace(out / "gpu_suite.json")


# ---------------------------------------------------------------------------------------------
# Workers (run in the child processes)


def environment_worker(path: str) -> None:
    """Versions and the device, written to ``path`` as JSON."""
    import numpy
    import pandas
    import scipy
    import torch

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "cpus": os.cpu_count(),
        "device_name": "CPU only",
    }
    try:
        import recbole

        facts["recbole"] = recbole.__version__
    except ImportError as error:  # the model steps will fail; say why here first
        facts["recbole"] = f"missing ({error})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["device_name"] = torch.cuda.get_device_name(0)
        facts["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        facts["device_count"] = torch.cuda.device_count()
    Path(path).write_text(json.dumps(facts, indent=1), encoding="utf-8")


def script_worker(peak_path: str, script: str, script_args: list[str]) -> int:
    """Call a benchmarks/ script's ``main(script_args)``, then record this process's peak GPU
    memory. The exit status is what ``main`` returns when that is a number, else 0."""
    import runpy

    import torch

    code = 0
    try:
        # Not run as __main__: the script's own `main()` call, which reads sys.argv, stays out.
        returned = runpy.run_path(script, run_name="gpu_suite_script")["main"](script_args)
        code = returned if isinstance(returned, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    Path(peak_path).write_text(json.dumps({"peak_gpu_mb": peak}), encoding="utf-8")
    return code


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        if argv[1] == "environment":
            environment_worker(argv[2])
            return 0
        return script_worker(argv[2], argv[3], argv[4:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmark_results" / "gpu_suite")
    parser.add_argument("--budget-s", type=float, default=480, help="whole suite (default 480)")
    parser.add_argument(
        "--device", default=None, choices=("cuda", "cpu"), help="default: cuda if available"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a plumbing check")
    parser.add_argument("--dataset", default=None, help="model steps' dataset (ml-100k-mm)")
    parser.add_argument(
        "--only", default=None, help="comma-separated step names to run; others are listed"
    )
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    steps = plan(args)
    names = [s.name for s in steps]
    only = set(args.only.split(",")) if args.only else set(names)
    if only - set(names):
        parser.error(f"--only: unknown steps {sorted(only - set(names))}; steps: {names}")
    dataset_settings: dict = {}
    if args.dataset is None:
        args.dataset = SMOKE_DATASET if args.smoke else "ml-100k-mm"
    environment: dict = {}
    for step in steps:
        if step.name not in only:
            step.record["status"] = "not selected"
            continue
        left = remaining_s(args.budget_s)
        if left < step.min_s:
            step.record["status"] = f"skipped: budget spent ({max(left, 0):.0f} s left)"
            continue
        limit = min(step.cap_s, left)
        step.record["limit_s"] = limit
        print(f"[gpu_suite] {step.name}: up to {limit:.0f} s", file=sys.stderr, flush=True)
        start = time.monotonic()
        if step.kind == "environment":
            path = args.out / "environment.json"
            command = [sys.executable, __file__, "--worker", "environment", str(path)]
            status, error = run_command(command, args.out / "logs" / "environment.log", limit)
            step.record.update(status=status, error=error)
            if status == "ok":
                environment = json.loads(path.read_text())
                step.record["figures"] = environment
        elif step.kind == "script":
            run_script_step(step, args.out, limit)
        else:
            if args.smoke and args.dataset == SMOKE_DATASET and not dataset_settings:
                dataset_settings = write_smoke_dataset(args.out / "smoke-data")
            run_model_step(step, args.out, limit, args, dataset_settings)
        step.record["wall_s"] = time.monotonic() - start
        print(
            f"[gpu_suite] {step.name}: {step.record['status']} in {step.record['wall_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        write_report(steps, args.out, args, environment)
    write_report(steps, args.out, args, environment)
    print((args.out / "gpu_suite.md").read_text(encoding="utf-8"))
    ran = [s for s in steps if s.name in only]
    return 0 if all(s.record.get("status") == "ok" for s in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
