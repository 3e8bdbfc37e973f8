"""Sequential (next-item) recommenders."""

from recbole_mm.model.sequential_recommender.cemg import CEMG
from recbole_mm.model.sequential_recommender.imecd import IMECD
from recbole_mm.model.sequential_recommender.tiger import TIGER

__all__: list[str] = ["CEMG", "IMECD", "TIGER"]
