"""Content roles: which of a dataset's modalities plays each role a model reads.

The rules (``modality_roles``, the ``role`` tags of a dataset's ``modalities``, the usual names)
are described in :mod:`recbole_mm.model.abstract_recommender`; they live here, with the data,
so that the configuration and the models read them from one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The standard content roles and the modality names that play them when a dataset's YAML tags
# none, in order of preference.
USUAL_NAMES = {"visual": ("visual", "image"), "textual": ("textual", "text")}


def role_tags(declared: Mapping | None) -> dict[str, str]:
    """``{modality: role}`` from the ``role`` entries of a ``modalities`` declaration."""
    return {
        name: entry["role"]
        for name, entry in (declared or {}).items()
        if isinstance(entry, Mapping) and entry.get("role")
    }


def default_modality_roles(
    roles: Sequence[str] | None, modalities: Sequence[str], *, tags: Mapping[str, str]
) -> dict[str, str | None]:
    """What ``modality_roles: ~`` means: ``{role: modality}``, ``None`` where none plays a role.

    Args:
        roles: the model's fixed roles, or None for free roles (every modality, own name).
        modalities: the dataset's modality names, in declaration order.
        tags: ``{modality: role}`` declared by the dataset (:func:`role_tags`).
    """
    if roles is None:
        return {name: name for name in modalities}
    mapping = {}
    for role in roles:
        tagged = [name for name in modalities if tags.get(name) == role]
        named = [name for name in USUAL_NAMES.get(role, (role,)) if name in modalities]
        mapping[role] = (tagged + named + [None])[0]
    return mapping


def resolve_modality_roles(
    requested,
    *,
    roles: Sequence[str] | None,
    modalities: Sequence[str],
    tags: Mapping[str, str],
    dataset: str,
    model: str,
) -> tuple[dict[str, str], list[str]]:
    """``(mapping of the roles used, roles no modality plays)`` for ``modality_roles``.

    The second list is non-empty only for ``~`` with fixed roles the dataset lacks.

    Raises:
        ValueError: naming the key, the role, the modality and the dataset's modalities.
    """
    available = list(modalities)
    if requested is None:
        mapping = default_modality_roles(roles, available, tags=tags)
        return {r: m for r, m in mapping.items() if m is not None}, [
            r for r, m in mapping.items() if m is None
        ]
    if roles is not None:
        example = "{" + ", ".join(f"{r}: <modality>" for r in roles) + "}"
    else:
        example = "{" + ", ".join(f"{m}: {m}" for m in available[:2]) + "}"
    if not isinstance(requested, Mapping):
        raise ValueError(
            f"modality_roles = {requested!r} must map {model}'s content roles to modalities of "
            f"dataset '{dataset}' ({available}), e.g. {example}; ~ means the default, {{}} none."
        )
    if roles is not None:
        unknown = [r for r in requested if r not in roles]
        if unknown:
            raise ValueError(
                f"modality_roles = {dict(requested)!r} names the role '{unknown[0]}', which "
                f"{model} does not have: its roles are {list(roles)}. Map each to a modality of "
                f"dataset '{dataset}' ({available}) or to null to drop it, e.g. {example}."
            )
        order = [r for r in roles if r in requested]
    else:
        order = list(requested)
    mapping = {}
    for role in order:
        modality = requested[role]
        if modality is None:
            continue
        if modality not in available:
            raise ValueError(
                f"modality_roles['{role}'] = {modality!r}, but dataset '{dataset}' has the "
                f"modalities {available}. Map the role to one of them, or to null to run "
                f"{model} without it."
            )
        mapping[role] = modality
    return mapping, []
