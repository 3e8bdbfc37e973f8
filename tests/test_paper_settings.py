"""Every model's shipped defaults are its paper's method.

Each ``docs/models/<Model>.md`` has a section ``## Settings: defaults against the paper`` with one
table ``| key | default | paper | kind | why |``, one row per key of
``properties/model/<Model>.yaml``. ``kind`` says what the default is:

- ``paper``: the paper's value; ``switch``: a named switch for an invention or an ablation, whose
  default gives the paper's method. For both, the default must equal the paper's value.
- ``gap-fill`` (the paper is silent), ``bug fix`` (makes the code do what the paper says),
  ``platform`` (engineering, no effect on the method): the docs say why; no comparison.

Settings validated for one dataset live in ``properties/model/<Model>/<dataset>.yaml``; each key
there must be a documented key of the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from recbole_mm.lookup import recbole_mm_models

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Settings: defaults against the paper"
KINDS = {"paper", "switch", "gap-fill", "bug fix", "platform"}
MUST_MATCH = {"paper", "switch"}


def _cell_value(cell: str):
    """A table cell written as YAML in backticks (`0.001`, `~`, `{a: 1}`); '-' is no value."""
    cell = cell.strip()
    if cell == "-":
        return None
    match = re.fullmatch(r"`([^`]*)`", cell)
    if not match:
        raise ValueError(f"cell {cell!r} is not a YAML value in backticks or '-'")
    return yaml.safe_load(match.group(1))


def settings_table(model: str, repo: Path = REPO) -> dict[str, dict]:
    """``{key: {default, paper, kind}}`` from the model's docs page."""
    page = repo / "docs" / "models" / f"{model}.md"
    text = page.read_text(encoding="utf-8")
    assert HEADING in text, f"{page} has no section '{HEADING}'"
    section = text.split(HEADING, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows, f"{page}: '{HEADING}' has no table"
    header, _, *body = rows
    assert header == ["key", "default", "paper", "kind", "why"], f"{page}: header {header}"
    table = {}
    for cells in body:
        assert len(cells) == 5, f"{page}: row {cells} does not have 5 cells"
        key = cells[0].strip("`")
        assert key not in table, f"{page}: {key} has two rows"
        kind = cells[3]
        assert kind in KINDS, f"{page}: {key} has kind {kind!r}, not one of {sorted(KINDS)}"
        assert cells[4], f"{page}: {key} says nothing in 'why'"
        table[key] = {
            "default": _cell_value(cells[1]),
            "paper": _cell_value(cells[2]),
            "kind": kind,
        }
    return table


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


MODELS = sorted(recbole_mm_models())


@pytest.mark.parametrize("model", MODELS)
def test_defaults_are_the_papers_method(model):
    defaults = _yaml(REPO / "properties" / "model" / f"{model}.yaml")
    table = settings_table(model)
    assert set(table) == set(defaults), (
        f"docs/models/{model}.md's settings table and properties/model/{model}.yaml differ: "
        f"undocumented {sorted(set(defaults) - set(table))}, "
        f"not in the YAML {sorted(set(table) - set(defaults))}"
    )
    for key, row in table.items():
        assert row["default"] == defaults[key], (
            f"{model}.{key}: the docs give the default {row['default']!r}, "
            f"the YAML {defaults[key]!r}"
        )
        if row["kind"] in MUST_MATCH:
            assert row["default"] == row["paper"], (
                f"{model}.{key} ({row['kind']}): default {row['default']!r} is not the paper's "
                f"{row['paper']!r}; make the paper's method the default, or document the key as "
                f"a gap-fill, bug fix or platform setting"
            )


def _tuned_files():
    root = REPO / "properties" / "model"
    return sorted(p for p in root.glob("*/*.yaml"))


@pytest.mark.parametrize("path", _tuned_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tuned_settings_name_documented_keys_of_a_known_dataset(path):
    model, dataset = path.parent.name, path.stem
    assert model in MODELS, f"{path}: no model {model}"
    assert (REPO / "properties" / "dataset" / f"{dataset}.yaml").is_file(), (
        f"{path}: no dataset {dataset} in properties/dataset/"
    )
    unknown = set(_yaml(path)) - set(settings_table(model))
    assert not unknown, f"{path} sets keys the model does not document: {sorted(unknown)}"


def _model_spaces():
    root = REPO / "properties" / "hyper"
    return sorted(root.glob("*.hyper")) + sorted(root.glob("*/*.hyper"))


@pytest.mark.parametrize("path", _model_spaces(), ids=lambda p: str(p.relative_to(REPO)))
def test_search_spaces_read_and_name_documented_keys(path):
    """A model's grids (properties/hyper/<Model>.hyper: the paper's; <Model>/*.hyper: the
    departures validated per dataset) parse and search only keys the model documents (or
    RecBole's own training keys)."""
    from recbole_mm.experiments.search import read_space

    model = path.parent.name if path.parent.name != "hyper" else path.stem
    space = read_space(path)
    assert space, f"{path} is empty"
    if model in MODELS:
        import recbole

        recbole_overall = _yaml(Path(recbole.__file__).parent / "properties" / "overall.yaml")
        unknown = set(space) - set(settings_table(model)) - set(recbole_overall)
        assert not unknown, f"{path} searches keys {model} does not document: {sorted(unknown)}"


def test_a_departure_in_the_defaults_is_caught(tmp_path):
    """The check itself: a 'paper' row whose default differs from the paper fails."""
    page = tmp_path / "docs" / "models" / "X.md"
    page.parent.mkdir(parents=True)
    page.write_text(
        f"# X\n\n{HEADING}\n\n| key | default | paper | kind | why |\n|---|---|---|---|---|\n"
        "| `lr` | `0.01` | `0.001` | paper | Sec. 4 |\n| `n` | `2` | - | gap-fill | unstated |\n",
        encoding="utf-8",
    )
    table = settings_table("X", repo=tmp_path)
    assert table["lr"]["default"] != table["lr"]["paper"]
    assert table["n"] == {"default": 2, "paper": None, "kind": "gap-fill"}
