"""Control modalities of known informativeness: a collaborative factor mixed with noise.

A CONTROL, never a benchmark: the factor is computed from every interaction of the dataset,
validation and test included, so a model that uses it sees the held-out interactions through
its content. It answers one question: can a model use content that carries signal, and does it
stay unharmed by content that carries none?

For an existing dataset (RecBole atomic files in ``<data_path>/<name>/``), each item ``i`` gets

    z_i = the standardised rank-``dim`` SVD factor of item i in the whole user-item matrix
    x_i = sqrt(rho) * z_i + sqrt(1 - rho) * e_i,        e_i ~ N(0, I)

for each requested ``rho`` in [0, 1], written as the modality ``control_r<100 rho>`` (rho = 0.5:
``control_r50``; rho = 0.025: ``control_r2p5``) with ``recbole_mm.data.features.save_modality``.

- The matrix is binary (a user-item pair counts once) over every interaction file of the
  dataset: ``<name>.inter``, or ``<name>.{train,valid,test}.inter`` for a pre-split one.
- ``z`` is the item side ``V S`` of the SVD ``X = U S V^T``, each column signed so that its
  largest entry is positive, then standardised over the items with interactions (mean 0,
  variance 1), so that the correlation of each column of ``x`` with the same column of ``z`` is
  ``sqrt(rho)``. rho = 0 is pure noise: a negative control.
- Items listed in ``<name>.item`` without any interaction get ``z = 0`` (their rows are noise,
  scaled by ``sqrt(1 - rho)``).
- One noise matrix (seeded by ``--seed``, rows in sorted item-token order) serves every rho, so
  that two controls differ only in how much of the factor they hold, and rho = 0 is the same
  matrix for any interaction data over the same items.

``<name>.control.json`` records the arguments and counts. Usage::

    python -m dataset_tools.control --dataset ml-100k-mm --rho 1 0.5 0.1 0
    python -m dataset_tools.control --dataset tiktok-dev --data_path ../shared/data --rho 0.5

The embedded ``ml-100k-mm`` lives in recbole_mm's cache folder (built here if absent) unless
``--data_path`` names another parent folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_tools.common import (
    BENCHMARK_PHASES,
    ConversionError,
    conversion_errors,
    positive_int,
    run_cli,
)

logger = logging.getLogger("dataset_tools")

DEFAULT_DIM = 64
DEFAULT_SEED = 2020
# Above this many matrix cells the SVD is computed by ARPACK (scipy.sparse.linalg.svds).
DENSE_SVD_CELLS = 20_000_000
CONTROL_NOTE = (
    "CONTROL, never a benchmark: built from every interaction, validation and test included"
)


# ---------------------------------------------------------------------------------------------
# Reading


def dataset_folder(dataset: str, data_path: str | Path | None) -> Path:
    """The folder holding ``dataset``'s atomic files.

    ``<data_path>/<dataset>``; for an embedded dataset without ``data_path``, recbole_mm's cache
    folder (built if absent), the folder runs read.

    Raises:
        ConversionError: the folder does not exist.
    """
    if data_path is None:
        from recbole_mm.data.embedded import ensure_embedded_dataset, is_embedded

        if is_embedded(dataset):
            return ensure_embedded_dataset(dataset)
        data_path = "dataset"  # RecBole's default data_path
    folder = Path(data_path) / dataset
    if not folder.is_dir():
        raise ConversionError(
            f"The dataset folder {folder} does not exist. Pass --data_path, the folder that "
            f"holds '{dataset}/' (RecBole's data_path), or check the dataset name."
        )
    return folder


def interaction_files(folder: Path, dataset: str) -> list[Path]:
    """``<dataset>.{train,valid,test}.inter`` if any exist, else ``<dataset>.inter``."""
    split = [folder / f"{dataset}.{phase}.inter" for phase in BENCHMARK_PHASES]
    present = [path for path in split if path.is_file()]
    if present:
        if len(present) != len(split):
            missing = [str(path) for path in split if not path.is_file()]
            raise ConversionError(
                f"{folder} holds a pre-split dataset without {', '.join(missing)}: the control "
                f"must see every interaction. Restore the missing files."
            )
        return present
    whole = folder / f"{dataset}.inter"
    if not whole.is_file():
        raise ConversionError(
            f"{folder} holds neither {whole.name} nor {dataset}.{{train,valid,test}}.inter: it is "
            f"not the folder of RecBole atomic files of '{dataset}'."
        )
    return [whole]


def _column(header: Sequence[str], field: str, path: Path) -> int:
    names = [h.split(":")[0] for h in header]
    if field not in names:
        raise ConversionError(
            f"{path} has no column '{field}' (its header: {', '.join(header)}). Pass "
            f"--user_field / --item_field with the dataset's USER_ID_FIELD / ITEM_ID_FIELD."
        )
    return names.index(field)


def read_pairs(
    paths: Sequence[Path], *, user_field: str = "user_id", item_field: str = "item_id"
) -> pd.DataFrame:
    """Distinct ``(user, item)`` token pairs of every file, as strings."""
    frames = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
        columns = [_column(header, user_field, path), _column(header, item_field, path)]
        frame = pd.read_csv(
            path, sep="\t", usecols=columns, dtype=str, keep_default_na=False, quoting=3
        )
        frame.columns = [header[c].split(":")[0] for c in sorted(columns)]
        frames.append(frame[[user_field, item_field]].set_axis(["user", "item"], axis=1))
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    if pairs.empty:
        raise ConversionError(f"{', '.join(map(str, paths))} hold no interaction.")
    return pairs


def listed_items(folder: Path, dataset: str, item_field: str = "item_id") -> list[str]:
    """Item tokens of ``<dataset>.item`` (empty when the file is absent)."""
    path = folder / f"{dataset}.item"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    column = _column(header, item_field, path)
    frame = pd.read_csv(
        path, sep="\t", usecols=[column], dtype=str, keep_default_na=False, quoting=3
    )
    return frame.iloc[:, 0].tolist()


# ---------------------------------------------------------------------------------------------
# The factor and the mixture


def item_factor(pairs: pd.DataFrame, *, dim: int, seed: int = DEFAULT_SEED):
    """Standardised rank-``dim`` SVD factor of every item of ``pairs``.

    Args:
        pairs: distinct ``user`` / ``item`` token pairs.
        dim: rank of the factor.
        seed: start vector of ARPACK on large matrices (the dense SVD uses none).

    Returns:
        ``(items, z)``: item tokens in sorted order and the ``[n_items, dim]`` float64
        factor, each column of mean 0 and variance 1.

    Raises:
        ConversionError: ``dim`` is not below ``min(n_users, n_items)``, or the matrix has rank
            below ``dim`` (a column of ``z`` would be constant).
    """
    import scipy.sparse

    users, user_index = np.unique(pairs["user"].to_numpy(), return_inverse=True)
    # Sorted tokens: the noise row of an item does not depend on the order of the files.
    items, item_index = np.unique(pairs["item"].to_numpy(), return_inverse=True)
    n_users, n_items = len(users), len(items)
    if dim >= min(n_users, n_items):
        raise ConversionError(
            f"--dim {dim} is not below min(users, items) = min({n_users}, {n_items}) of the "
            f"interaction matrix: choose a smaller --dim."
        )
    x = scipy.sparse.csr_matrix(
        (np.ones(len(pairs)), (item_index, user_index)), shape=(n_items, n_users)
    )
    if n_users * n_items <= DENSE_SVD_CELLS:
        u, s, _ = np.linalg.svd(x.toarray(), full_matrices=False)
        u, s = u[:, :dim], s[:dim]
    else:
        from scipy.sparse.linalg import svds

        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, size=min(x.shape))
        u, s, _ = svds(x, k=dim, v0=v0)
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    scores = u * s  # [n_items, dim]: x is items x users, so U S is the item side
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(dim)])
    scores = scores * np.where(signs == 0, 1.0, signs)
    std = scores.std(axis=0)
    flat = np.flatnonzero(std < 1e-12 * max(1.0, float(np.abs(scores).max())))
    if len(flat):
        raise ConversionError(
            f"the interaction matrix has rank {dim - len(flat)} < --dim {dim}: choose --dim "
            f"{dim - len(flat)} or less."
        )
    return list(items), (scores - scores.mean(axis=0)) / std


def check_rho(rhos: Sequence[float]) -> list[float]:
    """The rhos as floats; raise naming the bad value unless each is in [0, 1] and distinct."""
    out = []
    for rho in rhos:
        rho = float(rho)
        if not (0.0 <= rho <= 1.0) or math.isnan(rho):
            raise ConversionError(
                f"--rho {rho:g} is outside [0, 1]: rho is the squared correlation of the "
                f"control with the factor (1: the factor itself, 0: pure noise)."
            )
        out.append(rho)
    names = [modality_name(rho) for rho in out]
    if len(set(names)) != len(names):
        raise ConversionError(f"--rho {' '.join(map(str, rhos))} names a modality twice.")
    return out


def modality_name(rho: float) -> str:
    """``control_r<100 rho>``: 0.5 -> ``control_r50``, 0.025 -> ``control_r2p5``."""
    percent = f"{100 * rho:.4f}".rstrip("0").rstrip(".")
    return "control_r" + percent.replace(".", "p")


def mix(z: np.ndarray, noise: np.ndarray, rho: float) -> np.ndarray:
    """``sqrt(rho) * z + sqrt(1 - rho) * noise``, float32."""
    return (math.sqrt(rho) * z + math.sqrt(1.0 - rho) * noise).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The tool


def add_control_modalities(
    dataset: str,
    rhos: Sequence[float],
    *,
    data_path: str | Path | None = None,
    dim: int = DEFAULT_DIM,
    seed: int = DEFAULT_SEED,
    user_field: str = "user_id",
    item_field: str = "item_id",
) -> dict:
    """Write one control modality per rho into the dataset's folder; return the report.

    Args:
        dataset: the dataset name (its files are ``<name>.*``).
        rhos: squared correlations with the factor, each in [0, 1].
        data_path: the folder holding ``<dataset>/`` (default: the embedded dataset's cache
            folder, else RecBole's ``dataset``).
        dim: rank of the factor and width of each modality.
        seed: seed of the noise (and of ARPACK's start vector).
        user_field, item_field: the interaction files' user and item columns.

    Returns:
        ``{"folder", "files", "modalities": {name: rho}, "users", "items", "items_without_
        interactions", "pairs", "dim", "seed", "note"}``.
    """
    rhos = check_rho(rhos)
    if not isinstance(dim, int) or dim < 1:
        raise ConversionError(f"--dim {dim!r} must be a positive integer.")
    folder = dataset_folder(dataset, data_path)
    files = interaction_files(folder, dataset)
    pairs = read_pairs(files, user_field=user_field, item_field=item_field)
    items, z = item_factor(pairs, dim=dim, seed=seed)
    seen = set(items)
    extra = sorted(set(listed_items(folder, dataset, item_field)) - seen)
    tokens = items + extra
    z = np.vstack([z, np.zeros((len(extra), dim))])  # no interaction: z = 0
    noise = np.random.default_rng(seed).standard_normal(z.shape)

    from recbole_mm.data.features import save_modality

    written, modalities = [], {}
    for rho in rhos:
        name = modality_name(rho)
        features = mix(z, noise, rho)
        with conversion_errors():
            paths = save_modality(folder, dataset, name, tokens=tokens, features=features)
        written += [str(p) for p in paths]
        modalities[name] = rho
    report = {
        "note": CONTROL_NOTE,
        "folder": str(folder),
        "read": [str(p) for p in files],
        "files": written,
        "modalities": modalities,
        "users": int(pairs["user"].nunique()),
        "items": len(items),
        "items_without_interactions": len(extra),
        "pairs": len(pairs),
        "dim": dim,
        "seed": seed,
    }
    record = folder / f"{dataset}.control.json"
    record.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["files"].append(str(record))
    return report


def usage_yaml(report: dict) -> str:
    """The configuration lines that use each control modality alone."""
    dim = report["dim"]
    lines = [
        f"# {CONTROL_NOTE}.",
        "# Declare the controls (this replaces the dataset's own modalities for the run):",
        "modalities:",
        *(f"  {name}: {{dim: {dim}}}" for name in report["modalities"]),
        "# then give a model one of them alone, e.g. the first one:",
    ]
    first = next(iter(report["modalities"]))
    lines += [
        f"modality_roles: {{{first}: {first}}}  # GTC, MMGRec, VBPR",
        f"# modality_roles: {{visual: {first}, textual: ~}}  # IMECD, CEMG",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset_tools.control``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_tools.control",
        description="Add control modalities (a standardised SVD factor of the whole user-item "
        "matrix mixed with Gaussian noise at squared correlation rho) to a dataset. "
        + CONTROL_NOTE
        + ".",
        epilog="Example: python -m dataset_tools.control --dataset ml-100k-mm --rho 1 0.5 0.1 0",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k-mm")
    parser.add_argument(
        "--data_path",
        default=None,
        help="folder holding <dataset>/ (default: the cache folder of an embedded dataset, "
        "else ./dataset)",
    )
    parser.add_argument(
        "--rho",
        type=float,
        nargs="+",
        required=True,
        help="squared correlations with the factor, each in [0, 1], e.g. 1 0.5 0.1 0",
    )
    parser.add_argument("--dim", type=positive_int, default=DEFAULT_DIM, help="factor rank (64)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed (2020)")
    parser.add_argument("--user_field", default="user_id", help="user column (user_id)")
    parser.add_argument("--item_field", default="item_id", help="item column (item_id)")
    parser.add_argument("--quiet", action="store_true", help="no summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dataset_tools.control``."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> None:
        report = add_control_modalities(
            args.dataset,
            args.rho,
            data_path=args.data_path,
            dim=args.dim,
            seed=args.seed,
            user_field=args.user_field,
            item_field=args.item_field,
        )
        logger.info(
            "%s: %d users, %d items (%d without interactions: z = 0), %d pairs from %s",
            report["folder"],
            report["users"],
            report["items"] + report["items_without_interactions"],
            report["items_without_interactions"],
            report["pairs"],
            ", ".join(Path(p).name for p in report["read"]),
        )
        for path in report["files"]:
            logger.info("wrote %s", path)
        print(usage_yaml(report))

    return run_cli(body, argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
