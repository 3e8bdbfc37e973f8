"""docs/config_keys.md lists every key a recbole_mm model reads, and nothing else.

The keys are those of ``properties/model/<Model>.yaml`` and those the model code reads as
``config["key"]``, less RecBole's own settings (its overall and dataset defaults), the run's
identity (``model``, ``dataset``) and the dataset's ``modalities`` declaration. The section ``## Every key a model reads`` of the page holds
one row per key: the key in backticks and the models that have it. When this test fails it
prints the section as it should read.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import recbole
import yaml

from recbole_mm.properties import model_file
from recbole_mm.utils import recbole_mm_models

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "config_keys.md"
HEADING = "## Every key a model reads"
READ = re.compile(r"""config\[\s*["']([A-Za-z0-9_]+)["']\s*\]""")


def _recbole_keys() -> set[str]:
    folder = Path(recbole.__file__).parent / "properties"
    keys = {"model", "dataset", "modalities"}  # modalities: a dataset's declaration
    for name in ("overall.yaml", "dataset/sample.yaml"):
        keys |= set(yaml.safe_load((folder / name).read_text(encoding="utf-8")) or {})
    return keys


def model_keys() -> dict[str, list[str]]:
    """``{key: [models]}`` over every model's YAML and every ``config[...]`` read of its module
    and of the model package's shared modules."""
    models = recbole_mm_models()
    keys: dict[str, set[str]] = {}
    for name, cls in models.items():
        for key in yaml.safe_load(model_file(name).read_text(encoding="utf-8")) or {}:
            keys.setdefault(key, set()).add(name)
        source = Path(sys.modules[cls.__module__].__file__)
        for key in READ.findall(source.read_text(encoding="utf-8")):
            keys.setdefault(key, set()).add(name)
    module_files = {Path(sys.modules[c.__module__].__file__) for c in models.values()}
    for path in sorted((REPO / "recbole_mm" / "model").rglob("*.py")):
        if path in module_files:
            continue
        for key in READ.findall(path.read_text(encoding="utf-8")):
            keys.setdefault(key, set()).add("(shared)")
    ignored = _recbole_keys()
    # A shared module's read is listed under the models whose YAML has the key; "(shared)" only
    # marks a key no model's YAML sets.
    return {k: sorted(v - {"(shared)"} or v) for k, v in sorted(keys.items()) if k not in ignored}


def expected_section() -> str:
    rows = [f"| `{key}` | {', '.join(models)} |" for key, models in model_keys().items()]
    return "\n".join([HEADING, "", "| key | models |", "|---|---|", *rows])


def documented_section(text: str) -> str:
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    block = text[start:] if end == -1 else text[start:end]
    lines = [line for line in block.splitlines() if line.startswith(("## ", "| "))]
    return "\n".join([lines[0], "", lines[1], "|---|---|", *lines[2:]])


def test_every_key_a_model_reads_is_listed_and_no_other():
    text = PAGE.read_text(encoding="utf-8")
    assert HEADING in text, f"{PAGE} has no section '{HEADING}'"
    expected = expected_section()
    assert documented_section(text) == expected, (
        f"{PAGE}'s section '{HEADING}' is out of date; it should read:\n\n{expected}\n"
    )


def test_the_scan_sees_reads_yaml_keys_and_leaves_recbole_keys_out():
    keys = model_keys()
    assert "GTC" in keys["gtc_tc_weight"]  # a YAML key
    assert "stage_epochs" in keys and "modalities" not in keys  # a dataset's declaration
    assert "topk" not in keys and "seed" not in keys and "model" not in keys  # RecBole's
