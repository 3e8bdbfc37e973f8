"""recbole_mm: multimodal recommenders (GTC, MMGRec, IMECD, CEMG) as a RecBole plugin."""

from recbole_mm.registry import register_with_recbole

__version__ = "0.1.0"

register_with_recbole()
