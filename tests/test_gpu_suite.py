"""benchmarks/gpu_suite.py: the smoke mode end to end on CPU, the budget, the time limit."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from recbole_mm.utils import recbole_mm_models

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.py"
# The steps of the full suite, in order; the table must list each of them.
STEPS = [
    "environment",
    "gtc_scale",
    *sorted(recbole_mm_models()),  # every model of the registry, in name order
    "LightGCN",
    "SASRec",
    "beam_search",
    "mmgrec_inference",
]
# Enough to cross every kind of step in under a minute: the two multi-stage models (their
# per-stage epochs are the settings most likely to be wrong), each script, the environment.
SELECTED = [
    "environment",
    "gtc_scale",
    "MMGRec",
    "CEMG",
    "TIGER",
    "beam_search",
    "mmgrec_inference",
]


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("step", "---"):
            rows[cells[0]] = cells
    return rows


def test_smoke_mode_on_cpu_writes_one_table_with_every_step(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--device=cpu", f"--out={out}"]
        + ["--only=" + ",".join(SELECTED)],
        cwd=tmp_path,  # RecBole writes log/ into the working folder
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "gpu_suite.md").read_text()
    assert table in proc.stdout
    assert "GPU suite (smoke), device `cpu`" in table and "RecBole 1.2.1" in table
    rows = _rows(table)
    assert list(rows) == STEPS
    for name, cells in rows.items():
        assert cells[1] == ("ok" if name in SELECTED else "not selected"), cells
    record = json.loads((out / "gpu_suite.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert record["mode"] == "smoke" and record["environment"]["device_name"] == "CPU only"
    # GTC and LightGCN timed in one gtc_scale run, with their ratio.
    scale = steps["gtc_scale"]["figures"]
    assert scale["lightgcn"]["s_per_batch"] > 0 and scale["lightgcn"]["n_params"] > 0
    assert scale["ratio"]["train_batch_gtc_over_lightgcn"] > 0
    assert "GTC/LightGCN" in rows["gtc_scale"][4]
    # One epoch per stage, the stages read from each model class: 2 for MMGRec and TIGER, 3 for
    # CEMG, each validated run tested.
    assert steps["MMGRec"]["figures"]["epochs"] == 2
    assert steps["CEMG"]["figures"]["epochs"] == 3
    assert steps["TIGER"]["figures"]["epochs"] == 2
    for model in ("MMGRec", "CEMG", "TIGER"):
        figures = steps[model]["figures"]
        assert figures["train_s_per_epoch"] > 0 and figures["test_s"] > 0
        assert "--protocol=loo" in steps[model]["command"]
    assert "users/s" in rows["beam_search"][4] and "ms/user" in rows["mmgrec_inference"][4]
    for name in SELECTED:
        assert (out / "logs" / f"{name}.log").is_file(), name


def test_a_spent_budget_skips_the_steps_and_says_so(tmp_path, capsys):
    suite = _suite()
    status = suite.main(["--smoke", "--device=cpu", f"--out={tmp_path}", "--budget-s=1"])
    assert status == 1
    table = (tmp_path / "gpu_suite.md").read_text()
    rows = _rows(table)
    assert list(rows) == STEPS
    assert all(cells[1].startswith("skipped: budget spent") for cells in rows.values())
    assert "Skipped for lack of budget: environment, gtc_scale" in table


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path):
    suite = _suite()
    # A parent that starts a child and waits, as recbole_mm.benchmark waits on its worker.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    log = tmp_path / "step.log"
    start = time.monotonic()
    status, error = suite.run_command([sys.executable, "-c", code], log, limit_s=8)
    assert status == "timeout" and "8 s limit" in error
    assert time.monotonic() - start < 60
    child = int(log.read_text().split()[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the step's child process outlived the step"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_a_script_step_calls_main_with_its_arguments_and_leaves_sys_argv_alone(
    tmp_path, monkeypatch
):
    suite = _suite()
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys\n"
        "def main(argv=None):\n"
        f"    open({str(tmp_path / 'seen.json')!r}, 'w').write(json.dumps(argv))\n"
        "    return 3\n"
        "if __name__ == '__main__':\n"
        "    raise SystemExit(main(sys.argv[1:]))\n"
    )
    monkeypatch.setattr(sys, "argv", ["gpu_suite.py", "--stray"])
    peak = tmp_path / "peak.json"
    assert suite.script_worker(str(peak), str(script), ["--device", "cpu"]) == 3
    assert json.loads((tmp_path / "seen.json").read_text()) == ["--device", "cpu"]
    assert sys.argv == ["gpu_suite.py", "--stray"]
    assert json.loads(peak.read_text()) == {"peak_gpu_mb": None}
