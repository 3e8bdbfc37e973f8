"""The models' per-key constraints, declared as data and enforced by one validator.

A model lists its keys' constraints in its class attribute ``SETTINGS`` (key -> :class:`Rule`)
and :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender` checks them before the
model reads anything else, so every model refuses a bad value with the same message: the model,
the key, the value, the rule, and where the default lives. Constraints between several keys that
a rule cannot state (a capacity, a divisibility) stay in the model, next to the code they guard.

    SETTINGS = {
        "n_layers": whole(0),                             # an integer >= 0
        "edge_prune_ratio": number(0, 1, high_open=True), # a number in [0, 1)
        "gtc_eval_sampler": one_of("ddpm", "ddim"),       # the paper's value first
        "diffusion_eval_steps": whole(1, high_key="diffusion_steps", optional=True),
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real


@dataclass(frozen=True)
class Rule:
    """What one key accepts. Build it with :func:`whole`, :func:`number` or :func:`one_of`.

    Args:
        kind: ``"whole"`` (an int, not a bool), ``"number"`` (an int or a float, not a bool) or
            ``"choice"``.
        low, high: bounds (None: unbounded); ``low_open`` / ``high_open`` exclude them.
        high_key: another key whose value is an inclusive upper bound.
        choices: the accepted values of a ``"choice"``.
        optional: None (``~`` in YAML) is accepted too.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    high_key: str | None = None
    choices: tuple = ()
    optional: bool = False

    def describe(self, config: Mapping | None = None) -> str:
        """The rule in words, e.g. ``an integer in [1, diffusion_steps = 500]``."""
        if self.kind == "choice":
            text = f"one of {list(self.choices)}"
        else:
            text = "an integer" if self.kind == "whole" else "a number"
            high = self.high
            high_text = None if high is None else f"{high:g}"
            if self.high_key is not None:
                high = None if config is None else _read(config, self.high_key)
                high_text = self.high_key if high is None else f"{self.high_key} = {high}"
            if self.low is not None and high_text is not None:
                left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
                text += f" in {left}{self.low:g}, {high_text}{right}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
            elif high_text is not None:
                text += f" {'<' if self.high_open else '<='} {high_text}"
        return text + (" or ~ (empty)" if self.optional else "")

    def accepts(self, value, config: Mapping) -> bool:
        if value is None:
            return self.optional
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        if self.kind == "whole" and not isinstance(value, Integral):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        high = self.high if self.high_key is None else _read(config, self.high_key)
        if high is not None and (value >= high if self.high_open else value > high):
            return False
        return True


def _read(config: Mapping, key: str):
    """``config[key]``, None when absent (as RecBole's ``Config`` reads a missing key)."""
    return config[key] if key in config else None


def whole(
    low: int | None = None,
    high: int | None = None,
    *,
    high_key: str | None = None,
    optional: bool = False,
) -> Rule:
    """An integer in ``[low, high]`` (either bound may be None); ``high_key``: at most that
    key's value."""
    return Rule("whole", low=low, high=high, high_key=high_key, optional=optional)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Rule:
    """A number between ``low`` and ``high``, each bound included unless ``*_open``."""
    return Rule(
        "number", low=low, high=high, low_open=low_open, high_open=high_open, optional=optional
    )


def one_of(*choices, optional: bool = False) -> Rule:
    """One of ``choices`` (by convention the paper's value first)."""
    if not choices:
        raise ValueError("one_of() needs at least one choice")
    return Rule("choice", choices=tuple(choices), optional=optional)


def check_settings(config: Mapping, rules: Mapping[str, Rule], *, model: str) -> None:
    """Raise ``ValueError`` on the first key whose value breaks its rule.

    Args:
        config: RecBole's ``Config`` (a missing key reads as None) or a dict.
        rules: key -> :class:`Rule`.
        model: the model's name, for the message and the YAML it points to.
    """
    for key, rule in rules.items():
        value = _read(config, key)
        if not rule.accepts(value, config):
            raise ValueError(
                f"{model}: {key} = {value!r} must be {rule.describe(config)}; set it on the "
                f"command line or in a config file (default: properties/model/{model}.yaml)."
            )
