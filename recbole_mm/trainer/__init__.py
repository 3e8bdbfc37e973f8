"""Trainers of recbole_mm models, found by name as ``<Model>Trainer``.

Models that declare ``stages`` get :class:`MultiStageTrainer` unless a ``<Model>Trainer``
exists here (``recbole_mm.utils.get_trainer``).
"""

from recbole_mm.trainer.multistage import MultiStageTrainer

__all__ = ["MultiStageTrainer"]
