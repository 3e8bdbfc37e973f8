"""Transformer pieces for generating semantic ids from an unordered item set.

Reference:
    Han Liu et al. "MMGRec: Multimodal Generative Recommendation with Transformer Model."
    Sec. 4.3 (Eq. 14-19): relation-aware self-attention, whose user-scaled query/key/value
    projections stand in for positional encoding over a user's (unordered) items.

Blocks:
    - :class:`RelationAwareSelfAttention` (Eq. 14-19) and :class:`RelationAwareEncoder`, a stack of
      post-norm encoder layers built on it (``relation_aware=False`` gives plain multi-head
      self-attention with the same head layout, for the paper's Table 5 variants);
    - :class:`CachedTransformerDecoder`, a standard post-norm decoder (causal self-attention,
      cross-attention, feed-forward) with a full-sequence ``forward`` for teacher forcing and an
      incremental ``start`` / ``step`` / ``reorder`` API for beam search, which caches the memory's
      projected keys/values once and each layer's self-attention keys/values per generated token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, H * dh]`` -> ``[B, H, T, dh]``."""
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, dh]`` -> ``[B, T, H * dh]``."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _usable_padding(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Unmask the rows that are all padding (a user without items), which would give NaN.

    Such a row then attends uniformly over its (zero) padding embeddings: its output carries no
    item information, which is what an empty item set means.
    """
    if padding_mask is None:
        return None
    return padding_mask & ~padding_mask.all(dim=-1, keepdim=True)


class RelationAwareSelfAttention(nn.Module):
    r"""Relation-aware multi-head self-attention (MMGRec Eq. 14-19).

    Per head ``h`` with ``W^Q_h, W^K_h, W^V_h`` and, shared by all heads, user-specific matrices
    ``W_u^* = s_*(u) U^*`` whose scalars ``s_Q, s_K, s_V`` come from an MLP on the user vector
    (Eq. 18):

    .. math::
        p_j^u = e_j W_u^V                                                     \quad (14)
        \epsilon_{ij} = [(e_i W^Q)(e_j W^K)^T + (e_i W_u^Q)(e_j W_u^K)^T] / \sqrt{d_h}   (17)
        \alpha_{ij} = \mathrm{softmax}_j(\epsilon_{ij})                       \quad (16)
        x_i = \sum_j \alpha_{ij} (e_j W^V + p_j^u)                            \quad (15)

    computed for all ``i`` at once as Eq. 19; the heads' outputs are concatenated and projected
    back to ``d_model``. The paper gives every head the full width (``head_dim = d_model``);
    ``relation_aware=False`` drops the user terms (standard attention; the user parameters
    still exist, unused, so that state dicts match).

    Args:
        d_model: width D of the input and output.
        n_heads: number of heads.
        head_dim: width of one head (default ``d_model``, as in the paper).
        user_dim: width of the user vector fed to the scalar MLP (default ``d_model``).
        relation_aware: add the user-specific terms of Eq. 14-18.
        dropout: dropout on the attention weights.

    Shapes:
        x: ``[B, N, D]``; user: ``[B, user_dim]`` (ignored unless relation-aware);
        padding_mask: ``[B, N]`` bool, True at padding; returns ``[B, N, D]``.
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        user_dim: int | None = None,
        relation_aware: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model = {d_model} and n_heads = {n_heads} must be positive")
        self.n_heads = n_heads
        self.head_dim = head_dim or d_model
        self.relation_aware = relation_aware
        width = n_heads * self.head_dim
        self.query = nn.Linear(d_model, width, bias=False)  # W^Q of every head
        self.key = nn.Linear(d_model, width, bias=False)  # W^K
        self.value = nn.Linear(d_model, width, bias=False)  # W^V
        self.out = nn.Linear(width, d_model)
        self.dropout = nn.Dropout(dropout)
        # U^Q, U^K, U^V of Eq. 18, shared across heads. Built (unused) without relation
        # awareness too, so that checkpoints load across the switch (ablations share a tokenizer).
        self.user_query = nn.Linear(d_model, self.head_dim, bias=False)
        self.user_key = nn.Linear(d_model, self.head_dim, bias=False)
        self.user_value = nn.Linear(d_model, self.head_dim, bias=False)
        # Eq. 18: MLP(h_u) -> one scalar per matrix (s_Q, s_K, s_V).
        self.user_scale = nn.Sequential(
            nn.Linear(user_dim or d_model, d_model), nn.ReLU(), nn.Linear(d_model, 3)
        )

    def forward(
        self,
        x: torch.Tensor,
        user: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = _heads(self.query(x), self.n_heads)  # [B, H, N, dh]
        k = _heads(self.key(x), self.n_heads)
        v = _heads(self.value(x), self.n_heads)
        scale = 1.0 / math.sqrt(self.head_dim)
        bias = None  # additive term of the logits, [B, 1, N, N]
        if self.relation_aware:
            if user is None:
                raise ValueError("relation-aware self-attention needs the user vectors `user`")
            s = self.user_scale(user)  # [B, 3]: s_Q, s_K, s_V (Eq. 18)
            user_q = self.user_query(x) * (s[:, 0, None, None] * scale)  # e_i W_u^Q / sqrt(d)
            user_k = self.user_key(x) * s[:, 1, None, None]  # e_j W_u^K
            position = self.user_value(x) * s[:, 2, None, None]  # p_j^u (Eq. 14)
            bias = (user_q @ user_k.transpose(-1, -2)).unsqueeze(1)  # second term of Eq. 17
            v = v + position.unsqueeze(1)  # e_j W^V + p_j^u (Eq. 15)
        padding_mask = _usable_padding(padding_mask)
        if padding_mask is not None:
            pad = torch.zeros(padding_mask.shape, dtype=x.dtype, device=x.device)
            pad = pad.masked_fill(padding_mask, float("-inf"))[:, None, None, :]  # [B, 1, 1, N]
            bias = pad if bias is None else bias + pad
        # Eq. 16-17 and 15 (softmax of the scaled logits plus the user term, applied to values)
        p = self.dropout.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=scale)
        return self.out(_merge(out))  # heads concatenated, projected  [B, N, D]


class RelationAwareEncoderLayer(nn.Module):
    """Post-norm encoder layer: relation-aware self-attention, then a feed-forward block.

    Shapes: as :class:`RelationAwareSelfAttention`.
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        head_dim: int | None = None,
        user_dim: int | None = None,
        relation_aware: bool = True,
    ) -> None:
        super().__init__()
        self.attention = RelationAwareSelfAttention(
            d_model=d_model,
            n_heads=n_heads,
            head_dim=head_dim,
            user_dim=user_dim,
            relation_aware=relation_aware,
            dropout=dropout,
        )
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, user=None, padding_mask=None):
        x = self.norm1(x + self.dropout(self.attention(x, user, padding_mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class RelationAwareEncoder(nn.Module):
    """A stack of :class:`RelationAwareEncoderLayer` (the MMGRec encoder, Sec. 4.3.2).

    Args:
        n_layers: number of layers; the other arguments as :class:`RelationAwareEncoderLayer`.

    Shapes:
        x: ``[B, N, D]``; user: ``[B, user_dim]``; padding_mask: ``[B, N]`` (True = padding);
        returns ``[B, N, D]``.
    """

    def __init__(self, *, n_layers: int, **layer_args) -> None:
        super().__init__()
        if n_layers <= 0:
            raise ValueError(f"n_layers = {n_layers} must be positive")
        self.layers = nn.ModuleList(
            RelationAwareEncoderLayer(**layer_args) for _ in range(n_layers)
        )

    def forward(self, x, user=None, padding_mask=None):
        for layer in self.layers:
            x = layer(x, user, padding_mask)
        return x


class _Attention(nn.Module):
    """Multi-head attention whose keys/values can be projected once and reused."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} must be divisible by n_heads = {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, S, D]`` -> keys and values ``[B, H, S, dh]``."""
        return _heads(self.key(source), self.n_heads), _heads(self.value(source), self.n_heads)

    def attend(self, x, keys, values, mask=None):
        """Queries from ``x`` ``[B, T, D]``; ``mask`` broadcastable to ``[B, H, T, S]``, True = keep."""
        q = _heads(self.query(x), self.n_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p)
        return self.out(_merge(out))


class _DecoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, dim_feedforward, dropout):
        super().__init__()
        self.self_attention = _Attention(d_model, n_heads, dropout)
        self.cross_attention = _Attention(d_model, n_heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, self_kv, self_mask, memory_kv, memory_mask):
        x = self.norms[0](x + self.dropout(self.self_attention.attend(x, *self_kv, self_mask)))
        x = self.norms[1](x + self.dropout(self.cross_attention.attend(x, *memory_kv, memory_mask)))
        return self.norms[2](x + self.dropout(self.feed_forward(x)))


class CachedTransformerDecoder(nn.Module):
    """Standard post-norm Transformer decoder with an incremental, cached decoding path.

    ``forward`` decodes a whole target sequence with a causal mask (training, teacher forcing).
    ``start`` projects the memory's keys/values once per layer; ``step`` decodes one new position
    from the cache (a post-norm layer's keys/values at earlier positions do not change when a
    token is appended, so they are computed once); ``reorder`` selects cache rows for beam search.
    Both paths give the same outputs (tested).

    Args:
        d_model, n_heads, n_layers, dim_feedforward, dropout: the usual Transformer sizes
            (``d_model`` divisible by ``n_heads``).

    Shapes:
        tgt: ``[B, T, D]``; memory: ``[B, S, D]``; memory_padding_mask: ``[B, S]`` bool, True at
        padding; ``forward`` returns ``[B, T, D]``; ``step`` takes and returns ``[B, 1, D]``.
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        n_layers: int,
        dim_feedforward: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_layers <= 0:
            raise ValueError(f"n_layers = {n_layers} must be positive")
        self.layers = nn.ModuleList(
            _DecoderLayer(d_model, n_heads, dim_feedforward, dropout) for _ in range(n_layers)
        )

    @staticmethod
    def _memory_mask(memory_padding_mask):
        padding = _usable_padding(memory_padding_mask)
        return None if padding is None else ~padding[:, None, None, :]  # [B, 1, 1, S]

    def forward(self, tgt, memory, memory_padding_mask=None):
        t = tgt.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt.device).tril()
        memory_mask = self._memory_mask(memory_padding_mask)
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                layer.self_attention.keys_values(x),
                causal,
                layer.cross_attention.keys_values(memory),
                memory_mask,
            )
        return x

    def start(self, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None = None) -> dict:
        """The decoding cache for ``memory``: projected memory keys/values, empty self cache."""
        return {
            "memory_kv": [layer.cross_attention.keys_values(memory) for layer in self.layers],
            "memory_mask": self._memory_mask(memory_padding_mask),
            "self_kv": [None] * len(self.layers),
        }

    def step(self, x: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """Decode the next position ``x`` ``[B, 1, D]`` against everything cached so far."""
        self_kv = []
        for layer, past, memory_kv in zip(self.layers, cache["self_kv"], cache["memory_kv"]):
            k, v = layer.self_attention.keys_values(x)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            self_kv.append((k, v))
            x = layer(x, (k, v), None, memory_kv, cache["memory_mask"])
        return x, {**cache, "self_kv": self_kv}

    @staticmethod
    def reorder(cache: dict, index: torch.Tensor) -> dict:
        """Keep rows ``index`` ``[B']`` of every cached tensor (beam selection / expansion)."""

        def pick(entry):
            if entry is None:
                return None
            if isinstance(entry, torch.Tensor):
                return entry.index_select(0, index)
            return type(entry)(pick(e) for e in entry)

        return {key: pick(value) for key, value in cache.items()}
