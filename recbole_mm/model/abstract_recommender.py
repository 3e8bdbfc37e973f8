"""Base classes of recbole_mm's models: the content a model uses and its training graph.

As RecBole-GNN's ``GeneralGraphRecommender`` takes its graph from the dataset, these bases take
from the dataset everything that is data, and the model only uses it. A base owns:

- ``self.modality_roles``: ``{role: dataset modality}``, resolved once from the one key
  ``modality_roles`` (:func:`recbole_mm.data.modalities.resolve_modality_roles`);
- ``self.features``: a :class:`FeatureBank`, ``self.features[role]`` being the ``[n_items, d]``
  feature matrix of a role (row 0: RecBole's padding item), a buffer that follows the model to
  its device and is not saved with it; each width is checked against ``modalities.<name>.dim``;
- ``self.adjacency``: the training split's normalised user-item adjacency
  (``dataset.normalized_adjacency``), for classes that set ``adjacency_norm``; not saved either.

Content roles. A model names the content it uses by role.

- Free roles (``content_roles = None``: GTC, MMGRec, VBPR): ``modality_roles: ~`` is every
  modality of the dataset, in its declaration order, each under its own name.
- Fixed roles (IMECD, CEMG declare ``visual`` and ``textual``): with ``~`` each role takes the
  modality the dataset's YAML tags with it (``modalities: {kg: {dim: 64, role: visual}}``),
  else the modality named like the role or by its usual name
  (``recbole_mm.data.modalities.USUAL_NAMES``: visual -> image, textual -> text). The tag is
  how a dataset says which modality plays a role: every model with that role reads it, and
  models with free roles ignore it.
- A mapping ``{role: modality}`` names exactly the roles used, in the model's role order for
  fixed roles and in the mapping's order otherwise: a role mapped to ``null`` is dropped and
  ``{}`` is no content. It holds wherever it is set (config files, config dict, command line,
  a dataset YAML), for whichever model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import torch
from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender
from torch import nn

from recbole_mm.data.modalities import resolve_modality_roles, role_tags
from recbole_mm.model.checks import Rule, check_settings

logger = logging.getLogger(__name__)


class FeatureBank(nn.Module):
    """Item feature matrices by content role: ``bank[role]`` is ``[n_items, d]``.

    The matrices are buffers, so they follow the model to its device, and are not persistent:
    they are data, rebuilt from the dataset, never saved in a checkpoint. A model may replace a
    role's matrix by a transform of it (``bank[role] = pca(bank[role])``).
    """

    def __init__(self, features: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.roles: list[str] = []
        for role, matrix in features.items():
            self[role] = matrix

    def _key(self, role: str) -> str:
        return str(self.roles.index(role))

    def __getitem__(self, role: str) -> torch.Tensor:
        if role not in self.roles:
            raise KeyError(f"no content role '{role}'; the roles are {self.roles}")
        return self._buffers[self._key(role)]

    def __setitem__(self, role: str, matrix: torch.Tensor) -> None:
        if role not in self.roles:
            self.roles.append(role)
        self.register_buffer(self._key(role), matrix, persistent=False)

    def __contains__(self, role: object) -> bool:
        return role in self.roles

    def __iter__(self) -> Iterator[str]:
        return iter(self.roles)

    def __len__(self) -> int:
        return len(self.roles)

    def values(self) -> list[torch.Tensor]:
        return [self[role] for role in self.roles]

    @property
    def width(self) -> int:
        """Columns of all roles together, ``sum d``."""
        return sum(matrix.shape[1] for matrix in self.values())

    def concatenated(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The roles' matrices side by side, ``[n_items, sum d]`` (``rows`` only: ``[B, sum d]``)."""
        return torch.cat([m if rows is None else m[rows] for m in self.values()], dim=1)

    def extra_repr(self) -> str:
        return ", ".join(f"{role}: {tuple(self[role].shape)}" for role in self.roles)


class MultimodalRecommender:
    """Mixin that gives a RecBole recommender its content and graph (see the module docstring).

    Class attributes a model sets:
        content_roles: its fixed role names, or None for free roles.
        require_content_roles: a fixed role no modality plays is an error (else a warning and
            the role is dropped).
        requires_content: no role at all is an error.
        adjacency_norm: ``symmetric`` or ``mean`` to get ``self.adjacency``; None for none.
        SETTINGS: its keys' constraints, ``{key: Rule}`` (:mod:`recbole_mm.model.checks`),
            checked before anything else is built.
    """

    SETTINGS: ClassVar[Mapping[str, Rule]] = {}
    content_roles: tuple[str, ...] | None = None
    require_content_roles: bool = False
    requires_content: bool = False
    adjacency_norm: str | None = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_settings(config, self.SETTINGS, model=type(self).__name__)
        self.modality_roles = self._resolve_modality_roles(config, dataset)
        self.features = FeatureBank(
            {role: dataset.modality_features(name) for role, name in self.modality_roles.items()}
        )
        if self.adjacency_norm is not None:
            adjacency = dataset.normalized_adjacency(self.adjacency_norm)
            self.register_buffer("adjacency", adjacency, persistent=False)

    def _resolve_modality_roles(self, config, dataset) -> dict[str, str]:
        model, name, available = type(self).__name__, config["dataset"], list(dataset.modalities)
        mapping, missing = resolve_modality_roles(
            config["modality_roles"],
            roles=self.content_roles,
            modalities=available,
            tags=role_tags(config["modalities"]),
            dataset=name,
            model=model,
        )
        if missing:
            hint = (
                f"map them with modality_roles (e.g. {{{missing[0]}: <one of {available}>}}), "
                f"or tag a modality with 'role: {missing[0]}' under the dataset's modalities"
            )
            if self.require_content_roles:
                raise ValueError(
                    f"{model}: no modality of dataset '{name}' ({available}) plays the role(s) "
                    f"{missing}: {hint}; or drop a role with null."
                )
            logger.warning(
                "%s: no modality of dataset '%s' plays the role(s) %s; those branches are off. "
                "To use them, %s.",
                model,
                name,
                missing,
                hint,
            )
        if self.requires_content and not mapping:
            raise ValueError(
                f"{model} needs at least one content modality, but modality_roles = "
                f"{config['modality_roles']!r} leaves none on dataset '{name}' (its modalities: "
                f"{available}; key 'modalities' in its YAML)."
            )
        declared = config["modalities"] or {}
        for modality in mapping.values():
            width = dataset.modality_features(modality).shape[1]
            dim = (declared.get(modality) or {}).get("dim")
            if dim not in (None, width):
                raise ValueError(
                    f"modalities.{modality}.dim = {dim} but the '{modality}' features of dataset "
                    f"'{name}' are {width}-dimensional; fix the declaration."
                )
        return mapping


class MultimodalGeneralRecommender(MultimodalRecommender, GeneralRecommender):
    """RecBole's :class:`GeneralRecommender` with content features and the training graph."""


class MultimodalSequentialRecommender(MultimodalRecommender, SequentialRecommender):
    """RecBole's :class:`SequentialRecommender` with content features and the training graph.

    The training graph of a sequential split joins every user to its target and history items
    (:func:`recbole_mm.data.dataset.training_pairs`).
    """


class MultiStageRecommender:
    """Mixin: the contract of :class:`recbole_mm.trainer.multistage.MultiStageTrainer`.

    A model trained in stages (MMGRec, CEMG, TIGER) lists them in ``stages``, in training
    order, and says in :meth:`_stage_modules` which modules (or parameters) each trains. The
    trainer, for each stage it runs: calls :meth:`set_stage`, then :meth:`prepare_stage`,
    builds the optimiser over the parameters that then require gradients, trains with
    ``calculate_loss`` (which reads ``self.stage``) and saves a stage checkpoint; before every
    evaluation it calls :meth:`prepare_evaluation`.
    """

    stages: tuple[str, ...] = ()
    stage: str

    def _stage_modules(self) -> Mapping[str, Sequence[nn.Module | nn.Parameter]]:
        """``{stage: the modules or parameters it trains}``, for every stage."""
        raise NotImplementedError

    def set_stage(self, stage: str) -> None:
        """Make ``stage`` the one ``calculate_loss`` optimises: only its modules require
        gradients."""
        if stage not in self.stages:
            raise ValueError(
                f"{type(self).__name__}: unknown stage {stage!r}; stages are {self.stages}."
            )
        self.stage = stage
        trainable = self._stage_modules()[stage]
        self.requires_grad_(False)
        for part in trainable:
            part.requires_grad_(True)

    def prepare_stage(self, stage: str, train_data=None) -> None:
        """Called after :meth:`set_stage` and before the stage's optimiser is built (e.g. to
        assign codes with a trained tokenizer); by default nothing."""

    def prepare_evaluation(self, eval_data) -> None:
        """Called before each evaluation with its loader (e.g. to exclude what RecBole masks
        from a generative search); by default nothing."""
