"""IMECD: ID-guided multimodal experts with contrastive diffusion for sequential recommendation.

Reference:
    "IMECD: ID-Guided Multimodal Mixture of Experts with Contrastive Diffusion for Sequential
    Recommendation" (Sec. III; settings of Sec. IV-A-4). No public code; its parts follow
    DiffuRec (TOIS'23) and DiQDiff (WWW'25), which fill the gaps below.

Per branch ``m`` in {id, text, image}: item representations (ID embedding; Eq. 1-2 projections
of the pre-trained features, then the ID-guided mixture of experts, Eq. 3-6), the history as a
sequence of those representations, MS-VQ (Eq. 7-10) adding a selected sequence-shaped code, and
a conditional DDPM over the next item's representation whose Transformer denoiser predicts
``x0`` (Eq. 11-18). Scores are the sum of the branches' inner products (Eq. 19); the loss is
Eq. 20-22 summed over the branches.

Deviations and gap-fills. The defaults are the paper's method; every departure below that the
paper does not have is a named switch whose default turns it off (docs/models/IMECD.md has the
table of every key against the paper):
    - Denoiser input (the paper gives only ``f(x_t, t, s~)`` and "a Transformer"; gap-fill after
      DiffuRec): ``x_t`` plus a sinusoidal time embedding (through a two-layer MLP), scaled by
      ``diffusion_lambda``, is added to every position of the conditioning sequence, plus a
      learned position embedding; the output at the last (most recent) position is ``x0_hat``.
      Attention is bidirectional over the non-padding positions, as in DiffuRec. The default
      lambda is 1, so that ``x0_hat`` depends on ``x_t``: at DiffuRec's 0.001 the denoiser
      ignores ``x_t`` and the reverse chain reduces to one deterministic pass
      (benchmarks/imecd_dependence.py measures both).
    - ``diffusion_lambda_jitter`` (switch, off): DiffuRec's per-element draw of lambda from
      ``N(lambda, lambda)`` in training (its mean at evaluation).
    - Histories are left-aligned (DiffuRec's layout: the most recent item at the last position),
      so that the sequence-shaped codes of MS-VQ compare sequences by recency. Padding positions
      of ``s^m`` are zeros.
    - ``s^m`` is LayerNorm(dropout(item representations)) (DiffuRec's sequence embedding).
    - MS-VQ: the codebook starts from ``Z`` sequences of the first training batch; codes no
      sequence of a batch chose keep their value; ``vq_update_rate`` = 1 is Eq. 10 as written
      (the batch mean replaces the code), smaller values an exponential moving average. At
      evaluation the code is the argmax of the selection logits (no Gumbel noise). The
      selection MLP is Linear(L d, d) - GELU - Linear(d, Z) (DiQDiff-style, width not given).
    - ``cl_temperature`` (switch, default 1 = Eq. 15, which has none) divides the cosine
      similarities (DiQDiff uses 0.07). The sum in Eq. 15 includes ``x0_hat`` itself.
    - Eq. 14 is the squared L2 norm summed over the dimensions, averaged over the batch, weighed
      by ``lambda_r`` (default 1, Eq. 22; 0 is DiffuRec's loss, a switch).
      ``rec_stop_gradient`` (switch, off) detaches the target ``x0``, so that only the
      cross-entropy shapes the item representations; Eq. 14 has no stop-gradient. Each branch
      draws its own timesteps and noise.
    - Eq. 20-21 (training) score the one-step ``x0_hat = f(x_t, t, s~)`` of Eq. 13 at the
      branch's random ``t``, not the reverse chain's ``p_u`` (DiffuRec's practice; running the
      chain in training would cost ``T`` denoiser passes per step). Evaluation scores ``p_u``.
    - ``diffusion_eval_steps`` (switch; default ``~``, the ``T``-step DDPM chain of Eq. 16-18): a
      smaller k replaces the chain at evaluation by a strided deterministic DDIM chain of k
      denoiser calls; 1 is a single pass from ``x_T`` at ``t = T - 1``.
    - Evaluation noise (``x_T`` and the per-step noise of Eq. 18) comes from a
      ``torch.Generator`` seeded with ``seed`` and re-seeded whenever the model enters eval
      mode, so that every evaluation of the same weights gives the same scores.
    - Branches: ``modality_roles`` maps the content roles textual and visual (the paper's text
      and image branches) to any dataset modalities (by default the dataset's, e.g. kg plays
      the visual role on ml-100k-mm); a role mapped to null is dropped, which is the paper's
      "w/o Text" / "w/o Image" ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.layers import TransformerEncoder
from recbole.utils import InputType
from torch import Tensor, nn

from recbole_mm.model.abstract_recommender import MultimodalSequentialRecommender
from recbole_mm.model.checks import number, one_of, whole
from recbole_mm.model.layers.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    timestep_embedding,
)
from recbole_mm.model.layers.moe import GuidedMixtureOfExperts
from recbole_mm.model.layers.sequence_vq import SequenceQuantizer

# Content role -> branch; the branch names key the modules (and so the checkpoints).
BRANCHES = {"textual": "text", "visual": "image"}


class _Denoiser(nn.Module):
    """Eq. 13: ``x0_hat = f(x_t, t, s~)``, a Transformer over the conditioning sequence.

    Shapes:
        x_t: ``[B, d]``, t: long ``[B]``, cond: ``[B, L, d]``, attn_mask: ``[B, 1, L, L]``
        -> ``[B, d]``.
    """

    def __init__(
        self,
        *,
        hidden: int,
        seq_len: int,
        n_layers: int,
        n_heads: int,
        inner_size: int,
        dropout: float,
        attn_dropout: float,
        hidden_act: str,
        layer_norm_eps: float,
        lam: float,
        lam_jitter: bool = False,
    ):
        super().__init__()
        self.hidden, self.lam, self.lam_jitter = hidden, lam, lam_jitter
        self.time_mlp = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden)
        )
        self.position = nn.Embedding(seq_len, hidden)
        self.norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            n_layers=n_layers,
            n_heads=n_heads,
            hidden_size=hidden,
            inner_size=inner_size,
            hidden_dropout_prob=dropout,
            attn_dropout_prob=attn_dropout,
            hidden_act=hidden_act,
            layer_norm_eps=layer_norm_eps,
        )

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor, attn_mask: Tensor) -> Tensor:
        noisy = x_t + self.time_mlp(timestep_embedding(t, self.hidden))  # [B, d]
        if self.training and self.lam_jitter and self.lam > 0:  # DiffuRec's random lambda
            lam = torch.normal(self.lam, self.lam, size=cond.shape, device=cond.device)
        else:
            lam = self.lam
        h = cond + self.position.weight + lam * noisy.unsqueeze(1)  # [B, L, d]
        h = self.dropout(self.norm(h))
        out = self.encoder(h, attn_mask, output_all_encoded_layers=False)[-1]  # [B, L, d]
        return out[:, -1]  # the most recent position (histories are left-aligned)


def contrastive_loss(x0_hat: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Eq. 15: mean over the batch of ``log sum_j exp(cos(x_i, x_j) / temperature)``."""
    z = F.normalize(x0_hat, dim=-1)
    return torch.logsumexp(z @ z.T / temperature, dim=1).mean()


def left_align(item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
    """RecBole's right-padded histories ``[B, L]`` -> left-padded (most recent item last)."""
    seq_len = item_seq.shape[1]
    index = torch.arange(seq_len, device=item_seq.device) - (seq_len - item_seq_len).unsqueeze(1)
    return torch.where(index >= 0, item_seq.gather(1, index.clamp(min=0)), 0)


class IMECD(MultimodalSequentialRecommender):
    """The content branches are the roles of ``modality_roles`` (``self.features``), from
    :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender`."""

    input_type = InputType.POINTWISE  # softmax over all items: no negative sampling
    content_roles = tuple(BRANCHES)
    SETTINGS = {
        "hidden_size": whole(1),
        "n_heads": whole(1),
        "n_experts": whole(1),
        "vq_codebook_size": whole(1),
        "vq_injection_weight": number(0),  # lambda_q
        "lambda_c": number(0),
        "lambda_r": number(0),
        "cl_temperature": number(0, low_open=True),
        "gumbel_tau": number(0, low_open=True),
        "vq_update_rate": number(0, 1, low_open=True),
        "diffusion_steps": whole(1),
        "diffusion_eval_steps": whole(1, high_key="diffusion_steps", optional=True),
        "diffusion_lambda": number(0),
        "noise_schedule": one_of("linear", "truncated_linear"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.hidden_size = config["hidden_size"]
        self.lambda_q = config["vq_injection_weight"]  # lambda_q of Eq. 9
        self.lambda_c = config["lambda_c"]
        self.lambda_r = config["lambda_r"]
        self.rec_stop_gradient = config["rec_stop_gradient"]
        self.cl_temperature = config["cl_temperature"]
        self.use_id_moe = config["use_id_moe"]
        self.use_vq = config["use_vq"]
        self.eval_seed = int(config["seed"])
        self.roles = {BRANCHES[role]: role for role in self.modality_roles}  # branch -> role
        self.branches = ("id", *self.roles)
        if self.hidden_size % config["n_heads"]:
            raise ValueError(
                f"IMECD: hidden_size = {self.hidden_size} must be a multiple of n_heads = "
                f"{config['n_heads']}."
            )

        # define layers
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.projections = nn.ModuleDict()  # Eq. 1-2
        self.experts = nn.ModuleDict()  # Eq. 3-6
        for branch, role in self.roles.items():
            width = self.features[role].shape[1]  # d_m
            self.projections[branch] = nn.Linear(width, self.hidden_size)
            if self.use_id_moe:
                self.experts[branch] = GuidedMixtureOfExperts(
                    dim=self.hidden_size, guide_dim=self.hidden_size, n_experts=config["n_experts"]
                )
        self.embedding_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.sequence_norm = nn.ModuleDict(
            {m: nn.LayerNorm(self.hidden_size, eps=config["layer_norm_eps"]) for m in self.branches}
        )
        self.quantizers = nn.ModuleDict()  # Eq. 7-10
        if self.use_vq:
            for m in self.branches:
                self.quantizers[m] = SequenceQuantizer(
                    seq_len=self.max_seq_length,
                    dim=self.hidden_size,
                    n_codes=config["vq_codebook_size"],
                    tau=config["gumbel_tau"],
                    update_rate=config["vq_update_rate"],
                )
        self.denoisers = nn.ModuleDict(
            {
                m: _Denoiser(
                    hidden=self.hidden_size,
                    seq_len=self.max_seq_length,
                    n_layers=config["id_n_layers" if m == "id" else "content_n_layers"],
                    n_heads=config["n_heads"],
                    inner_size=config["inner_size"],
                    dropout=config["hidden_dropout_prob"],
                    attn_dropout=config["attn_dropout_prob"],
                    hidden_act=config["hidden_act"],
                    layer_norm_eps=config["layer_norm_eps"],
                    lam=config["diffusion_lambda"],
                    lam_jitter=config["diffusion_lambda_jitter"],
                )
                for m in self.branches
            }
        )
        self.schedule = NoiseSchedule(
            n_steps=config["diffusion_steps"],
            beta_start=config["beta_start"],
            beta_end=config["beta_end"],
            kind=config["noise_schedule"],
        )
        eval_steps = config["diffusion_eval_steps"]
        self.eval_steps = int(config["diffusion_steps"]) if eval_steps is None else eval_steps
        self._eval_generator: torch.Generator | None = None

        # parameters initialization
        self.initializer_range = config["initializer_range"]
        self.apply(self._init_weights)

    # -- configuration ------------------------------------------------------------------------
    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # -- evaluation noise ---------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:  # every evaluation of the same weights draws the same noise
            self._eval_generator = None
        return self

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._eval_generator is None or self._eval_generator.device != device:
            self._eval_generator = torch.Generator(device=device).manual_seed(self.eval_seed)
        return self._eval_generator

    # -- model --------------------------------------------------------------------------------
    def item_representations(self) -> dict[str, Tensor]:
        """Every item's representation per branch, ``{m: [n_items, d]}``."""
        id_emb = self.item_embedding.weight
        reps = {"id": id_emb}
        for branch, role in self.roles.items():
            e = self.projections[branch](self.features[role])  # Eq. 1-2
            if self.use_id_moe:
                e = self.experts[branch](e, id_emb)  # Eq. 3-6, gated by the ID embedding
            reps[branch] = e
        return reps

    def forward(
        self, item_seq: Tensor, item_seq_len: Tensor, reps: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Conditioning sequences ``{m: s~^m [B, L, d]}`` (Eq. 9) and the attention mask."""
        seq = left_align(item_seq, item_seq_len)  # [B, L]
        keep = (seq > 0).unsqueeze(-1).to(reps["id"].dtype)  # [B, L, 1]
        attn_mask = self.get_attention_mask(seq, bidirectional=True)  # [B, 1, L, L]
        conds = {}
        for m in self.branches:
            s = self.sequence_norm[m](self.embedding_dropout(reps[m][seq])) * keep  # s^m
            if self.use_vq:
                quantized, _ = self.quantizers[m](s)  # Eq. 7-8 (+ Eq. 10 when training)
                s = s + self.lambda_q * quantized  # Eq. 9
            conds[m] = s
        return conds, attn_mask

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        reps = self.item_representations()
        conds, attn_mask = self.forward(item_seq, item_seq_len, reps)
        ce = rec = cl = 0.0
        for m in self.branches:
            x0 = reps[m][target]  # [B, d]
            t = self.schedule.sample_timesteps(x0.shape[0])
            x_t = self.schedule.q_sample(x0, t, torch.randn_like(x0))  # Eq. 11-12
            x0_hat = self.denoisers[m](x_t, t, conds[m], attn_mask)  # Eq. 13
            ce = ce + F.cross_entropy(x0_hat @ reps[m].T, target)  # Eq. 20-21
            # Eq. 14; rec_stop_gradient (not the paper's) detaches the target.
            x0_target = x0.detach() if self.rec_stop_gradient else x0
            rec = rec + (x0_target - x0_hat).square().sum(-1).mean()
            if self.lambda_c > 0:
                cl = cl + contrastive_loss(x0_hat, temperature=self.cl_temperature)  # Eq. 15
        if self.lambda_c > 0:
            return ce, self.lambda_r * rec, self.lambda_c * cl  # Eq. 22
        return ce, self.lambda_r * rec

    def generate(self, interaction, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        """Eq. 16-18: ``p_u^m`` by the reverse process from Gaussian noise.

        ``eval_steps == n_steps``: the ``T``-step DDPM chain of the paper; fewer: a strided,
        deterministic DDIM chain (eta = 0) with ``eval_steps`` denoiser calls per branch.
        """
        conds, attn_mask = self.forward(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], reps
        )
        generator = self._generator(attn_mask.device)
        out = {}
        for m in self.branches:
            cond, denoiser = conds[m], self.denoisers[m]
            x_T = torch.randn(
                cond.shape[0], self.hidden_size, generator=generator, device=cond.device
            )
            denoise = lambda x_t, t: denoiser(x_t, t, cond, attn_mask)  # noqa: B023, E731
            if self.eval_steps == self.schedule.n_steps:
                out[m] = ddpm_sample(
                    denoise, self.schedule, x_T, prediction="x0", generator=generator
                )
            else:
                out[m] = ddim_sample(
                    denoise, self.schedule, x_T, n_steps=self.eval_steps, prediction="x0"
                )
        return out

    def predict(self, interaction):
        reps = self.item_representations()
        p = self.generate(interaction, reps)
        item = interaction[self.ITEM_ID]
        return sum((p[m] * reps[m][item]).sum(-1) for m in self.branches)  # Eq. 19, [B]

    def full_sort_predict(self, interaction):
        reps = self.item_representations()
        p = self.generate(interaction, reps)
        return sum(p[m] @ reps[m].T for m in self.branches)  # Eq. 19, [B, n_items]
