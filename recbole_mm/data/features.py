"""Content-modality feature files: the on-disk format, validation, and alignment to item ids.

A dataset ``D`` stored in folder ``F`` declares each content modality ``m`` in its YAML::

    modalities:
      text: {dim: 384}                     # reads F/D.text.npy and F/D.text.tokens
      image: {dim: 4096, feature_file: img.npy, token_file: img.tokens}
      kg: {dim: 64, role: visual}          # kg plays the visual role for models that have one

``<feature_file>`` is a ``numpy.save`` matrix of shape ``[n_rows, dim]``; ``<token_file>`` is
UTF-8 text with one raw item token per line, line ``i`` naming the item of row ``i``. The rows
need not follow any order and may cover more items (rows of items RecBole filtered out are
ignored) or fewer (missing items are filled by the ``missing_feature_policy``). ``role`` says
which content role of the models with fixed roles (IMECD, CEMG: visual, textual) the modality
plays when the run does not set ``modality_roles`` (:mod:`recbole_mm.model.abstract_recommender`).

Everything here is free of RecBole so that converters can write and check files without it:
:func:`read_feature_matrix` and :func:`check_feature_matrix` are the one reader and checker of
feature matrices, used by :func:`load_modality` and :func:`save_modality` and by the importers
of ``dataset_tools``, each call naming its own fix in the messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

FEATURE_SUFFIX = "npy"
TOKEN_SUFFIX = "tokens"
MISSING_POLICIES = ("mean", "zero", "drop")


class FeatureError(ValueError):
    """A feature file that cannot be used as it is; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """Where one modality's features live and what shape they must have."""

    name: str
    feature_file: Path
    token_file: Path
    dim: int | None = None
    role: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict | None, *, folder: str | Path, dataset: str):
        entry = dict(entry or {})
        unknown = set(entry) - {"dim", "feature_file", "token_file", "role"}
        if unknown:
            raise FeatureError(
                f"modalities.{name} in the configuration of dataset '{dataset}' has unknown "
                f"keys {sorted(unknown)}; allowed keys are dim, feature_file, token_file, role."
            )
        role = entry.get("role")
        if role is not None and (not isinstance(role, str) or not role):
            raise FeatureError(
                f"modalities.{name}.role = {role!r} for dataset '{dataset}' must be the name of "
                f"a content role (e.g. visual or textual)."
            )
        default_feature, default_token = feature_file_names(dataset, name)
        dim = entry.get("dim")
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise FeatureError(
                f"modalities.{name}.dim = {dim!r} for dataset '{dataset}' must be a positive integer."
            )
        return cls(
            name=name,
            feature_file=Path(folder) / entry.get("feature_file", default_feature),
            token_file=Path(folder) / entry.get("token_file", default_token),
            dim=dim,
            role=role,
        )


def feature_file_names(dataset: str, modality: str) -> tuple[str, str]:
    """Default file names of a modality: ``<dataset>.<modality>.npy`` and ``.tokens``."""
    return f"{dataset}.{modality}.{FEATURE_SUFFIX}", f"{dataset}.{modality}.{TOKEN_SUFFIX}"


def save_modality(
    folder: str | Path,
    dataset: str,
    modality: str,
    *,
    tokens: Sequence[str],
    features: np.ndarray,
) -> tuple[Path, Path]:
    """Write one modality in the format above (float32), after checking it; return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    feature_name, token_name = feature_file_names(dataset, modality)
    feature_path, token_path = folder / feature_name, folder / token_name
    features = np.asarray(features, dtype=np.float32)
    tokens = [str(t) for t in tokens]
    _check_rows_and_tokens(
        features, tokens, source=f"{feature_path} / {token_path}", modality=modality
    )
    bad = [t for t in tokens if not t or "\n" in t or t != t.strip()]
    if bad:
        raise FeatureError(f"item tokens {bad[:3]} cannot be written one per line to {token_path}.")
    np.save(feature_path, features)
    token_path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return feature_path, token_path


def load_modality(spec: ModalitySpec) -> tuple[list[str], np.ndarray]:
    """Read and validate one modality's files; return ``(tokens, float32 matrix)``."""
    features = read_feature_matrix(
        spec.feature_file,
        modality=spec.name,
        missing_fix=(
            f"Write it with recbole_mm.data.features.save_modality or a dataset_tools converter, "
            f"or point modalities.{spec.name}.feature_file at the right file."
        ),
    )
    if not spec.token_file.is_file():
        raise FeatureError(
            f"The item-token list of modality '{spec.name}' is missing: {spec.token_file} does not "
            f"exist. Write it with recbole_mm.data.features.save_modality or a dataset_tools "
            f"converter, or point modalities.{spec.name}.token_file at the right file."
        )
    tokens = spec.token_file.read_text(encoding="utf-8").splitlines()
    _check_rows_and_tokens(
        features,
        tokens,
        source=str(spec.feature_file),
        modality=spec.name,
        token_file=spec.token_file,
        dim=spec.dim,
    )
    return tokens, features.astype(np.float32, copy=False)


NPY_MAGIC = b"\x93NUMPY"
NONFINITE_FIX = (
    "Remove those rows (the missing-feature policy then fills them) or repair the extraction."
)


def read_feature_matrix(path: str | Path, *, modality: str, missing_fix: str) -> np.ndarray:
    """A feature matrix as it is stored: a ``numpy.save`` file, or a torch tensor in a ``.pt``
    file (MMGCN's layout). Nothing is unpickled.

    Args:
        path: the file.
        modality: named in the messages.
        missing_fix: what the message of a missing file tells the user to do.

    Returns:
        the array as stored (check it with :func:`check_feature_matrix`).

    Raises:
        FeatureError: the file is missing, empty, not a ``.npy`` (``.pt``) file, holds Python
            objects, or is truncated; the message names the file, the modality and the fix.
    """
    path = Path(path)
    subject = f"The feature matrix of modality '{modality}'"
    if not path.is_file():
        raise FeatureError(f"{subject} is missing: {path} does not exist. {missing_fix}")
    subject = f"{subject} {path}"
    remake = (
        "Write it again with the converter or extractor that made it (dataset_tools, or "
        "recbole_mm.data.features.save_modality), or copy it again from its source."
    )
    if path.suffix == ".pt":
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a bad file
            raise FeatureError(f"{subject} is not a torch tensor file ({err}). {remake}") from err
        return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if not head.startswith(NPY_MAGIC):
        what = "is empty" if not head else f"does not start as a .npy file does ({head!r})"
        raise FeatureError(f"{subject} {what}: it is not a numpy.save file. {remake}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickled data" in str(err) or "Object arrays" in str(err):
            raise FeatureError(
                f"{subject} holds Python objects, not numbers ({err}). Save a float matrix "
                f"[n_items, dim]. {remake}"
            ) from err
        raise FeatureError(
            f"{subject} is truncated or corrupt ({err}): it was probably cut short while being "
            f"written or copied. {remake}"
        ) from err
    except (EOFError, OSError) as err:
        raise FeatureError(
            f"{subject} is truncated or corrupt ({err or type(err).__name__}). {remake}"
        ) from err


def check_feature_matrix(
    matrix: np.ndarray,
    *,
    source: str,
    modality: str,
    rows: int,
    rows_note: str,
    at_least: bool = False,
    row_items: Sequence[str] | None = None,
    dim: int | None = None,
    nonfinite_fix: str = NONFINITE_FIX,
    drop_nonfinite: bool = False,
) -> np.ndarray:
    """Check a feature matrix: 2-D and numeric, ``rows`` rows (at least, with ``at_least``),
    finite, and ``dim`` columns when a dimension is declared.

    Args:
        matrix: ``[n_rows, d]``.
        source: the file(s) named in the messages; ``modality`` likewise.
        rows: the number of rows the matrix must have (the items it serves).
        rows_note: the end of the message when the rows do not match, after ``has N rows
            but``: what fixes ``rows`` and what to do.
        at_least: ``rows`` is a minimum (row ``i`` belongs to item id ``i``; more rows are
            allowed).
        row_items: the item of each row, named in messages (default: the row number, an item
            id).
        dim: the declared dimension, or None.
        nonfinite_fix: what the message about NaN or infinite values tells the user to do.
        drop_nonfinite: leave rows with NaN or infinite values out instead of failing.

    Returns:
        the indices of the rows kept (every row unless ``drop_nonfinite``).

    Raises:
        FeatureError: the first check that fails; the message names ``source``, the modality
            and the fix.
    """
    subject = f"The feature matrix of modality '{modality}' {source}"
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise FeatureError(
            f"{subject} must be a 2-D numeric [items, dim] matrix, got shape "
            f"{tuple(matrix.shape)} and dtype {matrix.dtype}."
        )
    n_rows = matrix.shape[0]
    if n_rows < rows or (n_rows != rows and not at_least):
        raise FeatureError(f"{subject} has {n_rows} rows but {rows_note}")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all() and not drop_nonfinite:
        bad = np.flatnonzero(~finite)
        named = (
            f"item ids {bad[:5].tolist()}"
            if row_items is None
            else f"items {[row_items[i] for i in bad[:5]]}"
        )
        raise FeatureError(
            f"{subject} has NaN or infinite values in {len(bad)} rows ({named}). {nonfinite_fix}"
        )
    if dim is not None and matrix.shape[1] != dim:
        raise FeatureError(
            f"{subject} has dimension {matrix.shape[1]} but the dataset configuration declares "
            f"modalities.{modality}.dim = {dim}; fix the declaration or the file."
        )
    return np.flatnonzero(finite)


def align_features(
    tokens: Sequence[str],
    features: np.ndarray,
    id2token: Sequence[str],
    *,
    policy: str,
    modality: str,
    source: str,
) -> tuple[torch.Tensor, list[str]]:
    """Reorder feature rows to RecBole's remapped item ids.

    Args:
        tokens: raw item token of each feature row.
        features: ``[n_rows, d]`` matrix.
        id2token: RecBole's ``field2id_token[item_field]``; position 0 is the padding token.
        policy: how to fill items without a row: ``mean`` of the present rows, ``zero``, or
            ``drop``, which expects such items to have been removed from the data already.
        modality, source: used in messages.

    Returns:
        ``([n_items, d] float32 tensor with row 0 all zeros, tokens of the filled items)``.
    """
    if policy not in MISSING_POLICIES:
        raise FeatureError(
            f"missing_feature_policy = {policy!r} is not one of {', '.join(MISSING_POLICIES)}."
        )
    row_of = {t: i for i, t in enumerate(tokens)}
    ids = np.asarray([row_of.get(str(t), -1) for t in id2token[1:]], dtype=np.int64)
    missing = [str(id2token[i + 1]) for i in np.flatnonzero(ids < 0)]
    if len(missing) == len(ids) and len(ids) > 0:
        raise FeatureError(
            f"No item of the interaction data has a row in {source} (modality '{modality}'): the "
            f"token file does not hold this dataset's item tokens (e.g. {missing[:3]}). Check that "
            f"the features were extracted for this dataset and with the same item ids."
        )
    if missing and policy == "drop":
        raise FeatureError(
            f"{len(missing)} items have no row in {source} (modality '{modality}') although "
            f"missing_feature_policy is 'drop' (e.g. {missing[:3]})."
        )
    out = np.zeros((len(id2token), features.shape[1]), dtype=np.float32)
    present = ids >= 0
    out[1:][present] = features[ids[present]]
    if missing and policy == "mean":
        out[1:][~present] = features[ids[present]].mean(axis=0)
    return torch.from_numpy(out), missing


def _check_rows_and_tokens(
    features: np.ndarray,
    tokens: Sequence[str],
    *,
    source: str,
    modality: str,
    token_file: Path | None = None,
    dim: int | None = None,
) -> None:
    """A modality's matrix against its token list: one token per row, no token twice."""
    tokens_named = token_file or "the token list"
    check_feature_matrix(
        features,
        source=source,
        modality=modality,
        rows=len(tokens),
        rows_note=(
            f"{tokens_named} names {len(tokens)} items: the files are misaligned; write one "
            f"token per feature row, in row order."
        ),
        row_items=tokens,
        dim=dim,
    )
    duplicated = _duplicates(tokens)
    if duplicated:
        raise FeatureError(
            f"{tokens_named} (modality '{modality}') repeats item tokens {duplicated[:3]}: each "
            f"item may have one row only."
        )


def _duplicates(tokens: Iterable[str]) -> list[str]:
    seen, repeated = set(), []
    for t in tokens:
        if t in seen:
            repeated.append(t)
        seen.add(t)
    return repeated
