"""recbole_mm: multimodal recommenders (GTC, MMGRec, IMECD, CEMG and their papers' baselines VBPR,
FREEDOM, BM3, LATTICE, MGCN, LGMRec, TIGER) as a RecBole plugin."""

try:
    import recbole  # noqa: F401
except ModuleNotFoundError as err:
    # recbole_mm cannot require RecBole: its ray<=2.6.3 has no wheel for Python 3.12 or newer.
    raise ModuleNotFoundError(
        "recbole_mm needs RecBole 1.2.1, installed without its ray requirement: "
        "pip install --no-deps recbole==1.2.1 (see README.md, 'Set up and run')",
        name="recbole",
    ) from err

from recbole_mm.registry import register_with_recbole  # noqa: E402

__version__ = "0.1.0"

register_with_recbole()
