"""Content-modality feature files: the on-disk format, validation, and alignment to item ids.

A dataset ``D`` stored in folder ``F`` declares each content modality ``m`` in its YAML::

    modalities:
      text: {dim: 384}                     # reads F/D.text.npy and F/D.text.tokens
      image: {dim: 4096, feature_file: img.npy, token_file: img.tokens}

``<feature_file>`` is a ``numpy.save`` matrix of shape ``[n_rows, dim]``; ``<token_file>`` is
UTF-8 text with one raw item token per line, line ``i`` naming the item of row ``i``. The rows
need not follow any order and may cover more items (rows of items RecBole filtered out are
ignored) or fewer (missing items are filled by the ``missing_feature_policy``).

Everything here is free of RecBole so that converters can write and check files without it.
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

    @classmethod
    def from_config(cls, name: str, entry: dict | None, *, folder: str | Path, dataset: str):
        entry = dict(entry or {})
        unknown = set(entry) - {"dim", "feature_file", "token_file"}
        if unknown:
            raise FeatureError(
                f"modalities.{name} in the configuration of dataset '{dataset}' has unknown "
                f"keys {sorted(unknown)}; allowed keys are dim, feature_file, token_file."
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
    _check_matrix(features, tokens, source=f"{feature_path} / {token_path}", modality=modality)
    bad = [t for t in tokens if not t or "\n" in t or t != t.strip()]
    if bad:
        raise FeatureError(f"item tokens {bad[:3]} cannot be written one per line to {token_path}.")
    np.save(feature_path, features)
    token_path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return feature_path, token_path


def load_modality(spec: ModalitySpec) -> tuple[list[str], np.ndarray]:
    """Read and validate one modality's files; return ``(tokens, float32 matrix)``."""
    for path, what in ((spec.feature_file, "feature matrix"), (spec.token_file, "item-token list")):
        if not path.is_file():
            raise FeatureError(
                f"The {what} of modality '{spec.name}' is missing: {path} does not exist. Write it "
                f"with recbole_mm.data.features.save_modality or a dataset_tools converter, or point "
                f"modalities.{spec.name}.{'feature_file' if what == 'feature matrix' else 'token_file'} "
                f"at the right file."
            )
    features = _read_matrix(spec)
    tokens = spec.token_file.read_text(encoding="utf-8").splitlines()
    source = str(spec.feature_file)
    _check_matrix(features, tokens, source=source, modality=spec.name, token_file=spec.token_file)
    if spec.dim is not None and features.shape[1] != spec.dim:
        raise FeatureError(
            f"{source} (modality '{spec.name}') has dimension {features.shape[1]} but the dataset "
            f"configuration declares modalities.{spec.name}.dim = {spec.dim}; fix the declaration or "
            f"the file."
        )
    return tokens, features.astype(np.float32, copy=False)


NPY_MAGIC = b"\x93NUMPY"


def _read_matrix(spec: ModalitySpec) -> np.ndarray:
    """``np.load`` of a feature file; a file that is not, or no longer, a whole ``.npy`` is
    reported with its name and how to produce it again."""
    path = spec.feature_file
    remake = (
        "Write it again with the converter or extractor that made it (dataset_tools, or "
        "recbole_mm.data.features.save_modality), or copy it again from its source."
    )
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if not head.startswith(NPY_MAGIC):
        what = "is empty" if not head else f"does not start as a .npy file does ({head!r})"
        raise FeatureError(
            f"The feature matrix of modality '{spec.name}', {path}, {what}: it is not a "
            f"numpy.save file. {remake}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickled data" in str(err) or "Object arrays" in str(err):
            raise FeatureError(
                f"The feature matrix of modality '{spec.name}', {path}, holds Python objects, "
                f"not numbers ({err}). Save a float matrix [n_items, dim]. {remake}"
            ) from err
        raise FeatureError(
            f"The feature matrix of modality '{spec.name}', {path}, is truncated or corrupt "
            f"({err}): it was probably cut short while being written or copied. {remake}"
        ) from err
    except (EOFError, OSError) as err:
        raise FeatureError(
            f"The feature matrix of modality '{spec.name}', {path}, is truncated or corrupt "
            f"({err or type(err).__name__}). {remake}"
        ) from err


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


def _check_matrix(
    features: np.ndarray,
    tokens: Sequence[str],
    *,
    source: str,
    modality: str,
    token_file: Path | None = None,
) -> None:
    if features.ndim != 2:
        raise FeatureError(
            f"{source} (modality '{modality}') must be a 2-D [items, dim] matrix, got shape "
            f"{tuple(features.shape)}."
        )
    if not np.issubdtype(features.dtype, np.number):
        raise FeatureError(
            f"{source} (modality '{modality}') has dtype {features.dtype}, not numeric."
        )
    if features.shape[0] != len(tokens):
        raise FeatureError(
            f"{source} (modality '{modality}') has {features.shape[0]} rows but "
            f"{token_file or 'the token list'} names {len(tokens)} items: the files are misaligned; "
            f"write one token per feature row, in row order."
        )
    duplicated = _duplicates(tokens)
    if duplicated:
        raise FeatureError(
            f"{token_file or 'the token list'} (modality '{modality}') repeats item tokens "
            f"{duplicated[:3]}: each item may have one row only."
        )
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise FeatureError(
            f"{source} (modality '{modality}') has NaN or infinite values in {len(rows)} rows "
            f"(items {[tokens[i] for i in rows[:3]]}); remove those rows (the missing-feature policy "
            f"then fills them) or repair the extraction."
        )


def _duplicates(tokens: Iterable[str]) -> list[str]:
    seen, repeated = set(), []
    for t in tokens:
        if t in seen:
            repeated.append(t)
        seen.add(t)
    return repeated
