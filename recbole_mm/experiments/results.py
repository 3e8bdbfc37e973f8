"""The experiments' results writer: Markdown, CSV and JSON tables for benchmarks and searches.

The benchmark (:mod:`recbole_mm.benchmark`) writes one row per model (:func:`summarise`,
:func:`markdown_report`) and one row per run (:func:`write_csv`); the search
(:mod:`recbole_mm.hyper`) writes one row per trial (:func:`write_search_results`). Both render
Markdown through :func:`pipe_table` and write JSON through :func:`write_json`.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


def pipe_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A Markdown pipe table; cells are written with ``str``.

    Args:
        header: the column names.
        rows: one sequence of cells per row, as long as ``header``.
    """
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


# -- benchmark: one row per model, one row per run ------------------------------------------
def check_splits(runs: Sequence[dict]) -> dict[int, dict]:
    """Per seed: each model's test-split hash and whether all models share it.

    Args:
        runs: run records (failed runs are ignored).

    Returns:
        ``{seed: {"consistent": bool, "hashes": {model: hash}, "odd": [models]}}``; ``odd``
        lists the models whose hash differs from the most common one of that seed (all of them
        when two hashes tie for most common).
    """
    by_seed: dict[int, dict[str, str]] = {}
    for run in runs:
        if run.get("status") == "ok":
            by_seed.setdefault(run["seed"], {})[run["model"]] = run["split_hash"]
    report = {}
    for seed, hashes in by_seed.items():
        top = Counter(hashes.values()).most_common(2)
        if len(top) > 1 and top[0][1] == top[1][1]:
            odd = list(hashes)  # no hash is the most common one: nothing to compare against
        else:
            odd = [m for m, h in hashes.items() if h != top[0][0]]
        report[seed] = {"consistent": not odd, "hashes": hashes, "odd": odd}
    return report


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def summarise(runs: Sequence[dict]) -> list[dict]:
    """One row per model (in run order): mean and sample std over its successful seeds.

    Args:
        runs: run records as :func:`recbole_mm.experiments.measure.measure_run` returns them.

    Returns:
        Rows with ``model``, ``seeds``, ``failed`` (seeds), ``test`` and ``valid``
        (``{metric: (mean, std)}``; std is None with one seed), ``valid_metric`` and
        ``(mean, std)`` pairs for ``train_s_per_epoch``, ``valid_s_mean``, ``test_s``,
        ``peak_rss_mb``, ``peak_gpu_mb``, ``n_params``, ``epochs``.
    """
    splits = check_splits(runs)
    rows: dict[str, dict] = {}
    for run in runs:
        row = rows.setdefault(run["model"], {"model": run["model"], "ok": [], "failed": []})
        row["ok" if run.get("status") == "ok" else "failed"].append(run)
    summary = []
    for model, row in rows.items():
        ok = row["ok"]
        entry: dict[str, Any] = {
            "model": model,
            "seeds": [r["seed"] for r in ok],
            "failed": [r["seed"] for r in row["failed"]],
            "valid_metric": ok[0]["valid_metric"] if ok else None,
            "split_ok": all(model not in splits[r["seed"]]["odd"] for r in ok),
        }
        for part, key in (
            ("test", "test_result"),
            ("valid", "best_valid_result"),
            ("test_tail", "test_tail_result"),
            ("valid_tail", "valid_tail_result"),
            ("test_new_all", "test_new_all_result"),
            ("test_new_new", "test_new_new_result"),
        ):
            metrics = list(dict.fromkeys(m for r in ok for m in r.get(key, {})))
            entry[part] = {
                m: _mean_std([r[key][m] for r in ok if m in r.get(key, {})]) for m in metrics
            }
        limits = {r.get("long_tail_max_interactions") for r in ok} - {None}
        entry["long_tail_max_interactions"] = limits.pop() if len(limits) == 1 else None
        entry["tail_pairs"] = _mean_std([r["tail_pairs"]["test"] for r in ok if "tail_pairs" in r])
        for key in (
            "train_s_per_epoch",
            "valid_s_mean",
            "test_s",
            "peak_rss_mb",
            "peak_gpu_mb",
            "n_params",
            "epochs",
        ):
            entry[key] = _mean_std([r[key] for r in ok if r.get(key) is not None])
        summary.append(entry)
    return summary


def _fmt(pair: tuple[float | None, float | None], digits: int, thousands: bool = False) -> str:
    mean, std = pair
    if mean is None:
        return "–"
    text = f"{mean:,.{digits}f}" if thousands else f"{mean:.{digits}f}"
    if std is not None:
        text += f" ± {std:,.{digits}f}" if thousands else f" ± {std:.{digits}f}"
    return text


# The backbones whose cost the others are shown against, the first one present in a table.
COST_BACKBONES = ("LightGCN", "SASRec")


def cost_backbone(rows: Sequence[dict]) -> dict | None:
    """The row of the first of :data:`COST_BACKBONES` with a successful run, or None."""
    by_model = {row["model"]: row for row in rows if row["seeds"]}
    return next((by_model[name] for name in COST_BACKBONES if name in by_model), None)


def _ratio(row: dict, base: dict, key: str) -> str:
    mean, base_mean = row[key][0], base[key][0]
    return "–" if mean is None or not base_mean else f"{mean / base_mean:.2f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """The Markdown table of :func:`summarise`'s rows.

    Columns: model, every test metric, the best validation value of the validation metric,
    the long-tail group when the runs measured it (the validation metric on test and on
    validation over the held-out pairs whose item has at most N training users, e.g.
    ``test ndcg@10 (items <= 5)``, and the number of such test pairs), train s/epoch,
    validation s (each followed by its ratio to the mean of the first of
    :data:`COST_BACKBONES` in the table, e.g. ``x LightGCN``, when one is there), peak MB (RSS;
    GPU MB too when a run used a GPU), #params, epochs, and
    ``split`` (``same`` when the model's test split equals the most common one of each seed,
    ``DIFFERS`` otherwise).

    Args:
        rows: as :func:`summarise` returns them.
    """
    metrics = list(dict.fromkeys(m for row in rows for m in row["test"]))
    valid_metrics = {row["valid_metric"] for row in rows if row["valid_metric"]}
    one_valid = valid_metrics.pop() if len(valid_metrics) == 1 else None
    gpu = any(row["peak_gpu_mb"][0] is not None for row in rows)
    header = ["model", *(f"test {m}" for m in metrics)]
    header += [f"best valid {one_valid}" if one_valid else "best valid"]
    limits = {row["long_tail_max_interactions"] for row in rows if row.get("test_tail")}
    tail = f"(items <= {limits.pop()})" if len(limits) == 1 else "(long tail)" if limits else None
    if tail:
        metric = one_valid or "valid metric"
        header += [f"test {metric} {tail}", f"valid {metric} {tail}", f"test pairs {tail}"]
    new_items = any(row.get("test_new_all") for row in rows)
    if new_items:
        metric = one_valid or "valid metric"
        header += [f"test {metric} (new items among all)", f"test {metric} (new items among new)"]
    base = cost_backbone(rows)
    times = ["s/epoch", "eval s"]
    if base is not None:
        times = ["s/epoch", f"s/epoch x {base['model']}", "eval s", f"eval s x {base['model']}"]
    header += [*times, "peak MB", *(["GPU MB"] if gpu else [])]
    header += ["#params", "epochs", "split"]
    table = []
    for row in rows:
        if not row["seeds"]:
            cells = [row["model"], *(["failed"] * (len(header) - 1))]
        else:
            vm = row["valid_metric"]
            best = _fmt(row["valid"].get(vm, (None, None)), 4)
            cells = [row["model"], *(_fmt(row["test"].get(m, (None, None)), 4) for m in metrics)]
            cells += [best if one_valid else f"{vm}: {best}"]
            if tail:
                cells += [
                    _fmt(row[part].get(vm, (None, None)), 4) for part in ("test_tail", "valid_tail")
                ]
                cells += [_fmt(row["tail_pairs"], 0, thousands=True)]
            if new_items:
                cells += [
                    _fmt(row[part].get(vm, (None, None)), 4)
                    for part in ("test_new_all", "test_new_new")
                ]
            for key in ("train_s_per_epoch", "valid_s_mean"):
                cells += [_fmt(row[key], 2)]
                cells += [_ratio(row, base, key)] if base is not None else []
            cells += [_fmt(row["peak_rss_mb"], 0, thousands=True)]
            cells += [_fmt(row["peak_gpu_mb"], 0, thousands=True)] if gpu else []
            epoch_digits = 1 if row["epochs"][1] else 0  # a fraction only when seeds differ
            cells += [_fmt(row["n_params"], 0, thousands=True), _fmt(row["epochs"], epoch_digits)]
            cells += ["same" if row["split_ok"] else "DIFFERS"]
        table.append(cells)
    return pipe_table(header, table)


def markdown_report(
    rows: Sequence[dict], runs: Sequence[dict], *, dataset: str, protocol: str
) -> str:
    """``results.md``: a header line, the table, then split and failure notes.

    Args:
        rows: as :func:`summarise` returns them.
        runs: the run records.
        dataset: dataset name.
        protocol: the resolved protocol.
    """
    seeds = sorted({r["seed"] for r in runs})
    devices = sorted({r["device"] for r in runs if r.get("device")})
    eval_args = next((r["eval_args"] for r in runs if r.get("eval_args")), None)
    parts = [
        f"Dataset `{dataset}`, protocol `{protocol}` (eval_args `{json.dumps(eval_args)}`), "
        f"seeds {', '.join(map(str, seeds))}, device {', '.join(devices) or '–'}. "
        + ("Mean ± sample std over seeds." if len(seeds) > 1 else "One seed."),
        "",
        markdown_table(rows),
        "",
    ]
    for seed, split in sorted(check_splits(runs).items()):
        hashes = ", ".join(f"{m} `{h[:12]}`" for m, h in split["hashes"].items())
        if split["consistent"]:
            common = next(iter(split["hashes"].values()))
            parts.append(f"- seed {seed}: every model has the same test split (`{common[:12]}`).")
        else:
            parts.append(f"- seed {seed}: **test splits differ**: {hashes}.")
    slowed = list(dict.fromkeys(r["model"] for r in runs if r.get("anomaly_detection")))
    if slowed:
        parts.append(
            f"- torch autograd anomaly detection was on while training {', '.join(slowed)}: "
            "their training times are inflated."
        )
    for row in rows:
        if row["failed"]:
            seeds_text = ", ".join(map(str, row["failed"]))
            parts.append(f"- {row['model']}: failed for seed(s) {seeds_text} (see results.json).")
    return "\n".join(parts).rstrip() + "\n"


CSV_FIXED = (
    "model",
    "seed",
    "status",
    "device",
    "epochs",
    "train_s_per_epoch",
    "valid_s_mean",
    "test_s",
    "data_s",
    "total_s",
    "peak_rss_mb",
    "peak_gpu_mb",
    "n_params",
    "valid_metric",
    "best_valid_score",
    "split_hash",
    "n_test_pairs",
    "long_tail_max_interactions",
)


def write_csv(runs: Sequence[dict], path: Path) -> None:
    """``results.csv``: one row per run; metrics as ``test_<metric>`` and ``valid_<metric>``,
    long-tail metrics as ``test_tail_<metric>`` / ``valid_tail_<metric>`` with their pair counts.

    Args:
        runs: the run records.
        path: file to write.
    """
    test = list(dict.fromkeys(m for r in runs for m in r.get("test_result", {})))
    valid = list(dict.fromkeys(m for r in runs for m in r.get("best_valid_result", {})))
    tail = list(dict.fromkeys(m for r in runs for m in r.get("test_tail_result", {})))
    fields = [*CSV_FIXED, *(f"test_{m}" for m in test), *(f"valid_{m}" for m in valid)]
    new_items = list(dict.fromkeys(m for r in runs for m in r.get("test_new_all_result", {})))
    fields += [f"test_new_{c}_{m}" for c in ("all", "new") for m in new_items]
    if tail:
        fields += ["tail_pairs_test", "tail_pairs_valid"]
        fields += [f"{part}_tail_{m}" for part in ("test", "valid") for m in tail]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            row = {key: run.get(key) for key in CSV_FIXED}
            row.update({f"test_{m}": v for m, v in run.get("test_result", {}).items()})
            row.update({f"valid_{m}": v for m, v in run.get("best_valid_result", {}).items()})
            for key in ("test_new_all_result", "test_new_new_result"):
                row.update({f"{key[:-7]}_{m}": v for m, v in run.get(key, {}).items()})
            for part in ("test", "valid"):
                row[f"tail_pairs_{part}"] = run.get("tail_pairs", {}).get(part)
                tail_result = run.get(f"{part}_tail_result", {})
                row.update({f"{part}_tail_{m}": v for m, v in tail_result.items()})
            writer.writerow(row)


def plot_valid_curves(runs: Sequence[dict], path: Path) -> None:
    """``valid_curves.png``: validation score against epoch, one line per model.

    With several seeds the line is the mean over the seeds that reached that epoch (early
    stopping ends seeds at different epochs) and the band spans their min and max.

    Args:
        runs: the run records.
        path: file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    metrics = set()
    for model in dict.fromkeys(r["model"] for r in runs):
        scores: dict[int, list[float]] = {}
        for run in runs:
            if run["model"] == model and run.get("status") == "ok":
                metrics.add(run["valid_metric"])
                for point in run["valid_curve"]:
                    scores.setdefault(point["epoch"], []).append(point["score"])
        if not scores:
            continue
        epochs = sorted(scores)
        means = [statistics.fmean(scores[e]) for e in epochs]
        (line,) = ax.plot(epochs, means, marker="o", markersize=3, label=model)
        if any(len(v) > 1 for v in scores.values()):
            low, high = [min(scores[e]) for e in epochs], [max(scores[e]) for e in epochs]
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid " + ", ".join(sorted(metrics)))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_record(dataset: str, protocol: str, eval_args: dict | None, runs: list[dict]) -> dict:
    """``results.json``: the run records with the dataset, protocol and per-seed split check."""
    return {
        "dataset": dataset,
        "protocol": protocol,
        "eval_args": eval_args,
        "splits": {str(k): v for k, v in check_splits(runs).items()},
        "runs": runs,
    }


def write_json(path: Path, data: dict, **dumps_kwargs) -> None:
    """Write ``data`` as JSON through a ``.part`` file, so a reader never sees half a file."""
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(data, **{"indent": 1, **dumps_kwargs}), encoding="utf-8")
    os.replace(partial, path)


def write_output(path: str | Path, data) -> Path:
    """A measuring script's ``--out``: ``data`` as JSON (:func:`write_json`, folders created),
    and a line saying where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data, indent=2)
    print(f"wrote {path}")
    return path


# -- search: one row per trial --------------------------------------------------------------
def write_search_results(result, folder: str | Path) -> dict[str, Path]:
    """``results.csv``, ``results.md`` and ``results.json``: one row per trial, best marked.

    Args:
        result: a :class:`recbole_mm.hyper.SearchResult` (a dataclass whose ``trials`` are
            dataclasses with ``params``, ``valid``, ``test``, ``seconds``, ``checkpoint``,
            ``error``, and whose ``best`` raises RuntimeError when no trial finished).
        folder: where to write; created if absent.

    Returns:
        ``{"csv": path, "md": path, "json": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        best = result.best
    except RuntimeError:  # every trial failed: the table shows why
        best = None
    params = sorted({k for t in result.trials for k in t.params})
    valid_keys = sorted({k for t in result.trials for k in t.valid})
    test_keys = sorted({k for t in result.trials for k in t.test})
    header = (
        ["trial", "best"]
        + params
        + [f"valid {k}" for k in valid_keys]
        + [f"test {k}" for k in test_keys]
        + ["seconds", "checkpoint", "error"]
    )
    rows = []
    for i, t in enumerate(result.trials):
        rows.append(
            [i, "*" if t is best else ""]
            + [t.params.get(k, "") for k in params]
            + [t.valid.get(k, "") for k in valid_keys]
            + [t.test.get(k, "") for k in test_keys]
            + [
                "" if t.seconds is None else round(t.seconds, 2),
                t.checkpoint or "",
                t.error or "",
            ]
        )
    paths = {"csv": folder / "results.csv", "md": folder / "results.md"}
    with open(paths["csv"], "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    title = (
        f"# {result.model} on {result.dataset}: {result.backend} {result.algo} search, "
        f"{len(result.trials)} trials, {result.wall_seconds:.1f} s\n\n"
        f"Selected on valid {result.valid_metric} "
        f"({'higher' if result.bigger else 'lower'} is better); test shown beside it.\n\n"
    )
    paths["md"].write_text(title + pipe_table(header, rows) + "\n")
    paths["json"] = folder / "results.json"
    summary = {
        **{k: v for k, v in asdict(result).items() if k != "trials"},
        "trials": [asdict(t) for t in result.trials],
        "best_trial": None if best is None else result.trials.index(best),
        "best_params": None if best is None else best.params,
        "best_valid": None if best is None else best.valid,
        "best_test": None if best is None else best.test,
    }
    write_json(paths["json"], summary, indent=2, default=str)
    return paths
