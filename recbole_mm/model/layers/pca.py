"""Deterministic principal component analysis in torch.

Used by CEMG (Sec. 3.2) to reduce each content modality to ``d`` dimensions before fusion.
"""

from __future__ import annotations

import torch
from torch import nn


class PCA(nn.Module):
    """Principal components fitted once, by an SVD in float64, with a fixed sign per component.

    ``fit`` centres the rows, takes the right singular vectors of the centred matrix and flips
    each so that its largest-magnitude entry is positive: the same input gives the same
    projection on every machine and every run (an SVD's sign is otherwise arbitrary).
    ``transform`` returns ``(x - mean) @ components.T``, optionally divided by the per-component
    standard deviation (``whiten``). The fitted buffers are saved with the module.

    Args:
        n_components: output width ``d``; at most ``min(n_rows, n_features)`` of the fit data.
        whiten: scale every component to unit variance over the fit data.

    Shapes:
        fit: x ``[N, F]``; transform: x ``[*, F]`` -> ``[*, d]``.
    """

    def __init__(self, *, n_components: int, whiten: bool = False) -> None:
        super().__init__()
        if n_components <= 0:
            raise ValueError(f"n_components = {n_components} must be positive")
        self.n_components = n_components
        self.whiten = whiten
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("components", torch.zeros(0, 0))  # [d, F]
        self.register_buffer("scale", torch.zeros(0))  # [d] standard deviation per component

    @property
    def fitted(self) -> bool:
        return self.components.numel() > 0

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> PCA:
        if x.dim() != 2:
            raise ValueError(f"PCA.fit expects a [N, F] matrix, got shape {tuple(x.shape)}")
        n, f = x.shape
        if self.n_components > min(n, f):
            raise ValueError(
                f"n_components = {self.n_components} exceeds min(rows, features) = {min(n, f)} "
                f"of the {n} x {f} fit matrix; choose n_components <= {min(n, f)}"
            )
        x64 = x.detach().double()
        mean = x64.mean(0)
        _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)
        components = vh[: self.n_components]  # [d, F]
        # Fix the sign: the entry of largest magnitude of each component is positive.
        pivot = components.abs().argmax(1)
        signs = torch.sign(components.gather(1, pivot[:, None]))
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
        scale = s[: self.n_components] / max(n - 1, 1) ** 0.5
        dtype = x.dtype if x.is_floating_point() else torch.float32
        self.mean = mean.to(dtype)
        self.components = components.to(dtype)
        self.scale = scale.clamp(min=1e-12).to(dtype)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("PCA.transform called before fit")
        out = (x - self.mean) @ self.components.T  # [*, d]
        return out / self.scale if self.whiten else out

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit(x).transform(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers start empty: take the fitted shapes from the checkpoint.
        for name in ("mean", "components", "scale"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
