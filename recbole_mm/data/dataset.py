"""RecBole datasets that carry content-modality feature matrices aligned to item ids.

The features of every modality the dataset declares (``modalities`` in its YAML, see
:mod:`recbole_mm.data.features`) are read and validated once, right after RecBole loads the
atomic files, and aligned to RecBole's remapped item ids once, after remapping. Models get them
through :meth:`MultimodalMixin.modality_features` and never read files; likewise the
normalised user-item adjacency of a split, built once per split by
:meth:`MultimodalMixin.normalized_adjacency`.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np
import torch
from recbole.data.dataset import Dataset, SequentialDataset

from recbole_mm.data.adjacency import ADJACENCY_NORMS
from recbole_mm.data.features import (
    FeatureError,
    ModalitySpec,
    align_features,
    load_modality,
)

logger = logging.getLogger(__name__)


class DatasetFilesMissing(FileNotFoundError):
    """The atomic files of a dataset are absent; the message says how to produce them."""


def required_files(config) -> list[Path]:
    """The interaction files RecBole will read for ``config``'s dataset."""
    folder, name = Path(config["data_path"]), config["dataset"]
    parts = config["benchmark_filename"]
    if parts:
        return [folder / f"{name}.{part}.inter" for part in parts]
    return [folder / f"{name}.inter"]


def check_dataset_files(config) -> None:
    """Raise :class:`DatasetFilesMissing` naming the files and the command that makes them."""
    missing = [str(p) for p in required_files(config) if not p.is_file()]
    if not missing:
        return
    name = config["dataset"]
    if config["build_command"]:
        fix = f"Produce them with:\n    {config['build_command']}\n(see docs/dataset_tools.md)"
    else:
        from recbole_mm.properties import configured_datasets

        fix = (
            "Put RecBole atomic files there (see README, 'Bring your own data'), set data_path, "
            f"or use a dataset recbole_mm has properties for: {', '.join(configured_datasets())}."
        )
    raise DatasetFilesMissing(f"Dataset '{name}': missing {', '.join(missing)}. {fix}")


class AtomicFileError(ValueError):
    """An atomic file RecBole cannot read as it is; the message names the file and the fix."""


ATOMIC_SUFFIXES = ("inter", "user", "item")
_EXAMPLE_HEADER = "user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float"


_SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}


def _separator_name(separator: str) -> str:
    """``tab`` for a tab; the repr of a separator without a name."""
    return _SEPARATOR_NAMES.get(separator, repr(separator))


def check_atomic_file(path: str | Path, *, separator: str = "\t", encoding: str = "utf-8") -> None:
    """Check that an atomic file has a header of ``name:type`` columns and at least one row.

    RecBole reads the header by splitting on ``field_separator`` and each column on ``:``;
    a file that breaks this fails there with "not enough values to unpack" or worse.

    Raises:
        AtomicFileError: naming the file, the column at fault and the fix.
    """
    from recbole.utils import FeatureType

    path = Path(path)
    types = [t.value for t in FeatureType]
    with open(path, encoding=encoding, errors="replace") as f:
        header = f.readline().rstrip("\n")
        has_rows = any(line.strip() for line in f)
    sep = _separator_name(separator)
    if not header.strip():
        raise AtomicFileError(
            f"{path} {'has an empty first line' if has_rows else 'is empty'}: an atomic file "
            f"starts with a header of name:type columns separated by a {sep}, e.g. "
            f"'{_EXAMPLE_HEADER}', followed by one row per line."
        )
    columns = header.split(separator)
    for other in ("\t", ",", ";", " "):
        if other != separator and len(columns) == 1 and header.count(":") > 1 and other in header:
            raise AtomicFileError(
                f"{path} looks {_separator_name(other)}-separated (header: '{header[:80]}'), "
                f"but field_separator is a {sep}. Convert the file to {sep}-separated columns "
                f"(RecBole's atomic format), or set field_separator: {other!r} if no value "
                f"contains a {_separator_name(other)}."
            )
    for number, column in enumerate(columns, start=1):
        name, colon, kind = column.partition(":")
        if not colon or not name or ":" in kind:
            raise AtomicFileError(
                f"{path}: column {number} of the header, '{column}', is not name:type. Every "
                f"column needs a type, one of {', '.join(types)} (e.g. '{_EXAMPLE_HEADER}')."
            )
        if kind not in types:
            near = difflib.get_close_matches(kind, types, n=1)
            hint = f"did you mean '{name}:{near[0]}'? " if near else ""
            raise AtomicFileError(
                f"{path}: column {number} of the header, '{column}', has type '{kind}', which "
                f"RecBole does not know: {hint}The types are {', '.join(types)}."
            )
    if not has_rows:
        raise AtomicFileError(
            f"{path} has a header but no rows: add the data (one row per line, columns "
            f"separated by a {sep}), or point data_path at the folder that holds it."
        )


def check_atomic_headers(config) -> None:
    """:func:`check_atomic_file` on every atomic file RecBole will read for ``config``."""
    folder, name = Path(config["data_path"]), config["dataset"]
    paths = list(required_files(config))
    paths += [folder / f"{name}.{suffix}" for suffix in ATOMIC_SUFFIXES if suffix != "inter"]
    for path in paths:
        if path.is_file():
            check_atomic_file(
                path,
                separator=config["field_separator"] or "\t",
                encoding=config["encoding"] or "utf-8",
            )


def prepare_dataset_files(config) -> None:
    """Build an embedded dataset on first use, then check the files RecBole will read."""
    from recbole_mm.data.embedded import ensure_embedded_dataset, is_embedded

    if is_embedded(config["dataset"]):
        ensure_embedded_dataset(config["dataset"], config["data_path"])
    check_dataset_files(config)
    check_atomic_headers(config)


def modality_specs(config) -> dict[str, ModalitySpec]:
    """The content modalities the configuration declares for its dataset."""
    declared = config["modalities"] or {}
    if not isinstance(declared, dict):
        raise FeatureError(
            f"modalities = {declared!r} for dataset '{config['dataset']}' must be a mapping "
            f"{{name: {{dim: ..}}}}."
        )
    specs = {
        name: ModalitySpec.from_config(
            name, entry, folder=config["data_path"], dataset=config["dataset"]
        )
        for name, entry in declared.items()
    }
    players: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.role in players:
            raise FeatureError(
                f"modalities.{players[spec.role]} and modalities.{name} of dataset "
                f"'{config['dataset']}' both play the role '{spec.role}'; tag one of them."
            )
        if spec.role is not None:
            players[spec.role] = name
    return specs


def training_pairs(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique (user, item) pairs of a sequential training split: targets and history items.

    The field names are the dataset's own (its user and item fields, ``LIST_SUFFIX`` and
    ``ITEM_LIST_LENGTH_FIELD`` of its configuration).
    """
    user_field, item_field = dataset.uid_field, dataset.iid_field
    list_suffix = dataset.config["LIST_SUFFIX"]
    length_field = dataset.config["ITEM_LIST_LENGTH_FIELD"]
    inter = dataset.inter_feat
    users, items = [inter[user_field]], [inter[item_field]]
    history, length = inter[item_field + list_suffix], inter[length_field]
    valid = torch.arange(history.shape[1])[None, :] < length[:, None]
    users.append(inter[user_field][:, None].expand_as(history)[valid])
    items.append(history[valid])
    pairs = torch.unique(torch.stack([torch.cat(users), torch.cat(items)]), dim=1)
    return pairs[0], pairs[1]


class MultimodalMixin:
    """Adds aligned content-modality features to a RecBole dataset class."""

    def __init__(self, config):
        self._raw_modalities: dict[str, tuple[list[str], np.ndarray, ModalitySpec]] = {}
        super().__init__(config)
        self._modality_features = self._align_modalities()
        del self._raw_modalities

    # -- public API ------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        """Names of the content modalities this dataset carries, in declaration order."""
        return tuple(self._modality_features)

    def modality_features(self, name: str) -> torch.Tensor:
        """``[n_items, d]`` float32 features of modality ``name``; row 0 (padding) is zeros."""
        if name not in self._modality_features:
            raise FeatureError(
                f"The model asks for modality '{name}' but dataset '{self.dataset_name}' declares "
                f"{list(self.modalities) or 'no modalities'}. Add it under 'modalities' in the "
                f"dataset's YAML with its feature files, or choose modalities the dataset has."
            )
        return self._modality_features[name]

    def interaction_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)``, ``[E]`` each: the edges of this split's user-item graph."""
        return (
            torch.as_tensor(self.inter_feat[self.uid_field]),
            torch.as_tensor(self.inter_feat[self.iid_field]),
        )

    def normalized_adjacency(self, norm: str = "symmetric") -> torch.Tensor:
        """The sparse adjacency ``[n_users + n_items, n_users + n_items]`` (users first) of the
        graph of :meth:`interaction_pairs`, built on first use and kept for this split.

        Args:
            norm: ``symmetric`` (``D^-1/2 A D^-1/2``, LightGCN) or ``mean`` (``D^-1 A``, the
                mean aggregator); see :mod:`recbole_mm.data.adjacency`.
        """
        if norm not in ADJACENCY_NORMS:
            raise ValueError(f"norm = {norm!r} must be one of {list(ADJACENCY_NORMS)}.")
        cache = self.__dict__.setdefault("_adjacency_cache", {})
        if norm not in cache:
            users, items = self.interaction_pairs()
            cache[norm] = ADJACENCY_NORMS[norm](
                users, items, n_users=self.user_num, n_items=self.item_num
            )
        return cache[norm]

    def copy(self, new_inter_feat):
        # RecBole's copy is shallow: a split must not share its parent's cached graphs.
        split = super().copy(new_inter_feat)
        split._adjacency_cache = {}
        return split

    # -- RecBole hooks ---------------------------------------------------------------------
    def _load_data(self, token, dataset_path):
        # Also reached through RecBole's own create_dataset: never let RecBole try a download.
        prepare_dataset_files(self.config)
        super()._load_data(token, dataset_path)
        for name, spec in modality_specs(self.config).items():
            tokens, features = load_modality(spec)
            self._raw_modalities[name] = (tokens, features, spec)
        if self.config["missing_feature_policy"] == "drop" and self._raw_modalities:
            self._drop_items_without_features()

    # -- internals -------------------------------------------------------------------------
    def _drop_items_without_features(self) -> None:
        """Remove the interactions (and .item rows) of items lacking a row in any modality."""
        covered = set.intersection(*(set(raw[0]) for raw in self._raw_modalities.values()))
        items = self.inter_feat[self.iid_field].astype(str)
        keep = items.isin(covered).to_numpy()
        dropped_items = sorted(set(items[~keep]))
        if self.benchmark_filename_list is not None:
            bounds = np.cumsum([0, *self.file_size_list])
            self.file_size_list = [int(keep[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
        self.inter_feat = self.inter_feat[keep].reset_index(drop=True)
        if self.item_feat is not None:
            known = self.item_feat[self.iid_field].astype(str).isin(covered)
            self.item_feat = self.item_feat[known.to_numpy()].reset_index(drop=True)
        logger.info(
            "missing_feature_policy=drop: removed %d items without features and their %d "
            "interactions from dataset '%s'.",
            len(dropped_items),
            int((~keep).sum()),
            self.dataset_name,
        )
        if len(self.inter_feat) == 0:
            raise FeatureError(
                f"Dataset '{self.dataset_name}': no interaction is left after dropping items "
                f"without features (missing_feature_policy=drop). Check that the feature token "
                f"files name this dataset's item tokens."
            )

    def _align_modalities(self) -> dict[str, torch.Tensor]:
        aligned = {}
        id2token = self.field2id_token[self.iid_field]
        policy = self.config["missing_feature_policy"]
        for name, (tokens, features, spec) in self._raw_modalities.items():
            matrix, missing = align_features(
                tokens,
                features,
                id2token,
                policy=policy,
                modality=name,
                source=str(spec.feature_file),
            )
            unused = len(tokens) - (len(id2token) - 1 - len(missing))
            logger.info(
                "modality '%s': %d items x %d dims from %s; %d items without a row filled by "
                "'%s'; %d rows of items absent from the interactions ignored.",
                name,
                len(id2token) - 1,
                matrix.shape[1],
                spec.feature_file,
                len(missing),
                policy,
                unused,
            )
            aligned[name] = matrix
        return aligned

    def __str__(self):
        lines = [super().__str__()]
        for name, matrix in self._modality_features.items():
            lines.append(f"Modality {name}: {tuple(matrix.shape)}")
        return "\n".join(lines)


class MultimodalDataset(MultimodalMixin, Dataset):
    """RecBole's :class:`~recbole.data.dataset.Dataset` with content-modality features."""


class MultimodalSequentialDataset(MultimodalMixin, SequentialDataset):
    """RecBole's :class:`~recbole.data.dataset.SequentialDataset` with content-modality features."""

    def interaction_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unique (user, item) pairs of the targets and the history items
        (:func:`training_pairs`)."""
        return training_pairs(self)


class LeaveOneOutDataset(MultimodalSequentialDataset):
    """The multimodal sequential dataset, refusing pre-split files with what to use instead.

    RecBole's sequential datasets read ``benchmark_filename`` files only as ready-made
    ``item_id_list`` sequences and fail with an ``AttributeError`` on plain interaction files
    such as the MMRec split of ``amazon-sports``.
    """

    def __init__(self, config):
        if config["benchmark_filename"]:
            name, model = config["dataset"], config["model"]
            raise ValueError(
                f"{model} is evaluated leave-one-out (its paper's protocol), but dataset '{name}' "
                f"is pre-split (benchmark_filename = {list(config['benchmark_filename'])}), "
                "which a sequential model cannot read. Build a leave-one-out copy with "
                "dataset_tools.amazon --split loo (e.g. --name amazon-sports-seq) and a YAML "
                "like properties/dataset/amazon-beauty.yaml; docs/models/CEMG.md has the commands."
            )
        super().__init__(config)
