"""General (user-item graph, top-K) recommenders."""

from recbole_mm.model.general_recommender.bm3 import BM3
from recbole_mm.model.general_recommender.freedom import FREEDOM
from recbole_mm.model.general_recommender.gtc import GTC
from recbole_mm.model.general_recommender.lattice import LATTICE
from recbole_mm.model.general_recommender.lgmrec import LGMRec
from recbole_mm.model.general_recommender.mgcn import MGCN
from recbole_mm.model.general_recommender.mmgrec import MMGRec
from recbole_mm.model.general_recommender.vbpr import VBPR

__all__ = ["BM3", "FREEDOM", "GTC", "LATTICE", "LGMRec", "MGCN", "MMGRec", "VBPR"]
