"""The one validator of the models' settings (recbole_mm.model.checks) and its use by every model."""

import pytest
import yaml

from recbole_mm.model.checks import check_settings, number, one_of, whole
from recbole_mm.properties import model_file
from recbole_mm.utils import recbole_mm_models


@pytest.mark.parametrize(
    ("rule", "value", "config", "ok"),
    [
        (whole(1), 1, {}, True),
        (whole(1), 0, {}, False),
        (whole(1), 2.0, {}, False),  # a float where an integer is meant
        (whole(0), True, {}, False),  # a bool is not an integer here
        (whole(1), None, {}, False),
        (whole(1, optional=True), None, {}, True),
        (whole(1, high_key="T"), 5, {"T": 5}, True),
        (whole(1, high_key="T"), 6, {"T": 5}, False),
        (number(0), 0, {}, True),
        (number(0, low_open=True), 0, {}, False),
        (number(0, 1, high_open=True), 1, {}, False),
        (number(0, 1), 1.0, {}, True),
        (number(0), "0.1", {}, False),
        (one_of("a", "b"), "b", {}, True),
        (one_of("a", "b"), "c", {}, False),
        (one_of("a", optional=True), None, {}, True),
    ],
)
def test_rules(rule, value, config, ok):
    assert rule.accepts(value, config) is ok


def test_the_message_names_model_key_value_rule_and_default_file():
    with pytest.raises(ValueError) as err:
        check_settings({"T": 10, "steps": 11}, {"steps": whole(1, high_key="T")}, model="GTC")
    assert str(err.value) == (
        "GTC: steps = 11 must be an integer in [1, T = 10]; set it on the command line or in a "
        "config file (default: properties/model/GTC.yaml)."
    )
    with pytest.raises(ValueError, match=r"rate = 0 must be a number in \(0, 1\]"):
        check_settings({"rate": 0}, {"rate": number(0, 1, low_open=True)}, model="M")
    with pytest.raises(ValueError, match=r"gate = 'x' must be one of \['a', 'b'\] or ~ \(empty\)"):
        check_settings({"gate": "x"}, {"gate": one_of("a", "b", optional=True)}, model="M")
    check_settings({}, {"absent": whole(1, optional=True)}, model="M")  # missing reads as None


@pytest.mark.parametrize("model", sorted(recbole_mm_models()))
def test_every_model_accepts_its_own_defaults(model):
    """Each rule holds for the model's YAML defaults, so no shipped setting is refused."""
    cls = recbole_mm_models()[model]
    defaults = yaml.safe_load(model_file(model).read_text(encoding="utf-8"))
    for key, rule in cls.SETTINGS.items():
        assert key in defaults, f"{model}.SETTINGS checks {key}, which its YAML does not set"
        assert rule.accepts(defaults[key], defaults), (model, key, defaults[key])
