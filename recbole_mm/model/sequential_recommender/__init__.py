"""Sequential (next-item) recommenders."""

__all__: list[str] = []
