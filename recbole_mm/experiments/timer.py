"""Per-phase wall times of RecBole's ``fit`` loop, as a trainer mixin.

:class:`TimedTrainerMixin` goes in front of a trainer class (:func:`with_timer` for a class
chosen at run time, composed the way :func:`recbole_mm.trainer.checkpoint.with_safe_checkpoints`
is). RecBole's ``fit`` calls ``self._train_epoch`` and ``self._valid_epoch`` (which calls
``self.evaluate``), so the mixin's overrides see every phase while ``fit`` itself, and every
class behind the mixin, run unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def float_metrics(result: dict | None) -> dict[str, float]:
    """``{metric: float}`` of a RecBole result dict (its values may be numpy or torch scalars)."""
    return {key: float(value) for key, value in (result or {}).items()}


def _loss_value(loss) -> float | None:
    if isinstance(loss, tuple):
        loss = sum(loss)
    try:
        return float(loss)
    except (TypeError, ValueError):
        return None


@dataclass
class PhaseTimes:
    """What :class:`TimedTrainerMixin` records (seconds; ``curve`` one point per validation)."""

    train_s: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    valid_s: list[float] = field(default_factory=list)
    test_s: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)


class TimedTrainerMixin:
    """Times each training epoch, each validation and each test evaluation into ``self.timings``.

    On a CUDA device the clock is read after ``torch.cuda.synchronize()``, so asynchronous
    kernels are counted in the phase that launched them. A validation's own ``evaluate`` call is
    counted as validation, not as test.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timings = PhaseTimes()
        self._timed_epoch = 0
        self._validating = False
        self._synchronize = lambda: None
        if str(getattr(self, "device", "cpu")).startswith("cuda"):
            import torch

            self._synchronize = torch.cuda.synchronize

    def _clock(self) -> float:
        self._synchronize()
        return time.perf_counter()

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        start = self._clock()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        self.timings.train_s.append(self._clock() - start)
        self.timings.train_loss.append(_loss_value(loss))
        self._timed_epoch = epoch_idx + 1
        return loss

    def _valid_epoch(self, valid_data, *args, **kwargs):
        self._validating = True
        start = self._clock()
        try:
            valid_score, valid_result = super()._valid_epoch(valid_data, *args, **kwargs)
        finally:
            self._validating = False
        self.timings.valid_s.append(self._clock() - start)
        self.timings.curve.append(
            {
                "epoch": self._timed_epoch,
                "score": float(valid_score),
                "result": float_metrics(valid_result),
            }
        )
        return valid_score, valid_result

    def evaluate(self, eval_data, *args, **kwargs):
        if self._validating:  # counted by _valid_epoch
            return super().evaluate(eval_data, *args, **kwargs)
        start = self._clock()
        result = super().evaluate(eval_data, *args, **kwargs)
        self.timings.test_s.append(self._clock() - start)
        return result


def with_timer(trainer_class: type) -> type:
    """``trainer_class`` with :class:`TimedTrainerMixin` in front (same name; cached)."""
    from recbole_mm.trainer.checkpoint import mixin_in_front

    return mixin_in_front(TimedTrainerMixin, trainer_class)
