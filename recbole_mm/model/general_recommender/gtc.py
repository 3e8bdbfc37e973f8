"""GTC: user-aware generative total-correlation learning for multimodal recommendation.

Reference:
    GTC, "Generating user-aware content representations and maximising cross-modal total
    correlation for multimodal recommendation" (../shared/papers/GTC.txt), Sec. 3.

Parts: parallel LightGCNs over the user-item graph for the interaction modality and every
content modality (Eq. 2); per content modality an interaction-conditioned diffusion model
trained by the denoising loss (Eq. 3-4) whose reverse process generates the user-aware content
representations (Eq. 5); a contrastive lower bound of the total correlation of the interaction
and generated content representations (Eq. 6-9); similarity-gated fusion with a residual
(Eq. 10); BPR + w1 L_GEN + w2 L_CON + L2 (Eq. 11-12). docs/models/GTC.md explains every choice.

Defaults are the paper's method (docs/models/GTC.md, "Settings: defaults against the paper");
settings chosen on validation for one dataset live in ``properties/model/GTC/<dataset>.yaml``.

Choices the paper leaves open (gap-fills):
    - Content modalities: any number ``M >= 0``, the roles of ``modality_roles`` (default:
      every modality the dataset has, under its own name; ``{}``: none). The paper's two
      (visual, textual) give three views; with one content modality the TC estimate is
      InfoNCE's on I(S; C) and C_f = C; with three, h is the 4-way multilinear product and C_f
      the product of the three; with none, GTC is LightGCN.
    - Training generates the batch's content views with a one-step DDIM chain from the same
      start as evaluation (``gtc_train_sample_steps``): Sec. 3.2 generates "after training"
      but Eq. 9-12 align and fuse the generated views while training. Evaluation runs the
      paper's T-step Eq. 5 (``gtc_eval_sampler: ddpm``), once per evaluation pass, in eval
      mode, with noise seeded by ``seed``, never reusing a training batch's views.
    - Eq. 10's softmax over a node's single similarity is identically 1 (``gtc_fusion_gate:
      softmax``): ``S_bar = S + C_f`` and tau has no effect; we implement it as printed.
    - L_GEN is a mean over elements summed over modalities, on the batch's users and items;
      L_CON sums the anchors' losses over the batch's distinct positive items; the L2 term of
      Eq. 12 regularises the batch's ID embeddings (RecBole's LightGCN convention) with the
      paper's weight 0.01 on squared norms.
    - Per-dataset T, w1, w2 come from Sec. 4.7 (Sports T = 300; Sec. 4.1 says 500).

Bug fix:
    - L_CON's denominator holds the positive and the N - 1 negatives (``gtc_tc_denominator:
      all``): Eq. 8's bound TC >= log N - loss holds for that form (Symile's, which the paper
      follows); Eq. 7 as printed (``negatives``, j != i) is no bound and rewards an unbounded
      positive score (layers/total_correlation.py).

Our inventions, each a switch that is off by default (measured in docs/models/GTC.md):
    - ``gtc_sample_start: content``: generation starts from C_T = q(C_T | C_0) instead of
      N(0, I). With the paper's noise start the generated views never read C_0: content
      reaches the model only through the denoisers L_GEN trains (and L_GEN trains the content
      encoders through C_t).
    - ``gtc_eval_sampler: ddim`` with ``diffusion_eval_steps``: strided deterministic sampling.
    - ``gtc_standardize``: diffuse C_0 divided by its per-column RMS (detached) and scale the
      generated views back; C_0 is ~20x smaller than the unit noise.
    - ``gtc_prediction: x0``: the denoiser outputs C_0 (the x0 form of Eq. 4).
    - ``gtc_clip_x0``: clamp every x0 estimate to the per-column range of C_0.
    - ``gtc_denoiser_losses: gen``: only L_GEN trains the denoisers; the generation inside a
      batch uses them as fixed samplers (the paper's Eq. 12 trains every parameter by the
      whole loss: ``all``).
    - ``gtc_gen_detach_content``: C_0 enters L_GEN detached.
    - ``gtc_fusion_gate: two_way``: a softmax between C_f (logit cos / tau) and "no content"
      (a learnable logit started at ``gtc_fusion_offset``), a per-node sigmoid gate that can
      close. A closed gate does not isolate S: L_GEN (the denoisers are conditioned on S) and
      L_CON (S is one of its views) still train it.
    - ``gtc_fusion_scale: match | mean``: C_f rescaled to the norm of S node by node, or to
      the mean norm of S over all nodes; ``raw`` (the paper) adds C_f as generated.
    - ``gtc_center_content``: C_0 less its mean over the users (user rows) and over the real
      items (item rows).
    - ``gtc_tc_normalize`` and ``gtc_tc_temperature``: L2-normalised views and scaled scores
      in L_CON (Symile's practice; the paper's raw h grows without bound with the norms).
    - Ablations (Table 3): ``gtc_denoise``, ``gtc_alignment``, ``gtc_fusion``; "Base w/ DN" and
      "Base w/ TC" keep Base's concatenation (each adds one part to Base), although Sec. 4.3
      also calls Base w/ TC "GTC removing denoising".
"""

from __future__ import annotations

import math
from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalGeneralRecommender
from recbole_mm.model.checks import number, one_of, whole
from recbole_mm.model.layers.diffusion import (
    MLPUNetDenoiser,
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
)
from recbole_mm.model.layers.graph import LightGCNPropagation
from recbole_mm.model.layers.total_correlation import (
    pairwise_contrastive_loss,
    total_correlation_loss,
)


def modality_balance_score(fused: torch.Tensor, views: list[torch.Tensor]) -> float:
    """Sec. 4.5: mean over rows of ``1 - (max_m cos(fused, E_m) - min_m cos(fused, E_m))``."""
    sims = torch.stack([F.cosine_similarity(fused, v, dim=-1) for v in views], dim=-1)  # [N, M]
    return float((1 - (sims.max(-1).values - sims.min(-1).values)).mean())


class GTC(MultimodalGeneralRecommender):
    """The content modalities are the roles of ``modality_roles`` (``self.features``), the
    user-item graph the dataset's symmetric-normalised adjacency (``self.adjacency``); both
    come from :class:`~recbole_mm.model.abstract_recommender.MultimodalRecommender`."""

    input_type = InputType.PAIRWISE
    adjacency_norm = "symmetric"
    # The paper's value first; the others are our switches or the Table 3 ablations.
    SETTINGS = {
        "embedding_size": whole(1),
        "n_layers": whole(0),
        "diffusion_steps": whole(1),  # T (the paper uses 100-1000)
        "gtc_train_sample_steps": whole(1, high_key="diffusion_steps"),
        "diffusion_eval_steps": whole(1, high_key="diffusion_steps", optional=True),
        "gtc_gen_weight": number(0),
        "gtc_tc_weight": number(0),
        "gtc_tc_temperature": number(0, low_open=True),
        "gtc_fusion_temperature": number(0, low_open=True),
        "gtc_eval_sampler": one_of("ddpm", "ddim"),
        "gtc_alignment": one_of("tc", "pairwise", "none"),
        "gtc_fusion": one_of("gate", "concat"),
        "gtc_sample_start": one_of("noise", "content"),
        "gtc_prediction": one_of("eps", "x0"),
        "gtc_denoiser_losses": one_of("all", "gen"),
        "gtc_tc_denominator": one_of("all", "negatives"),
        "gtc_fusion_scale": one_of("raw", "match", "mean"),
        # ~: a configuration saved before the key existed, which ran the two-way gate.
        "gtc_fusion_gate": one_of("softmax", "two_way", optional=True),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # load parameters
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.require_pow = config["require_pow"]
        self.gen_weight = config["gtc_gen_weight"]  # w1
        self.tc_weight = config["gtc_tc_weight"]  # w2
        self.denoise = config["gtc_denoise"]
        self.alignment = config["gtc_alignment"]
        self.fusion = config["gtc_fusion"]
        self.sample_start = config["gtc_sample_start"]
        self.eval_sampler = config["gtc_eval_sampler"]
        self.train_steps = config["gtc_train_sample_steps"]
        self.eval_steps = config["diffusion_eval_steps"] or self.train_steps
        self.tc_temperature = config["gtc_tc_temperature"]
        self.tc_normalize = config["gtc_tc_normalize"]
        self.tc_include_positive = config["gtc_tc_denominator"] == "all"
        self.fusion_scale = config["gtc_fusion_scale"]
        # A configuration saved before the key existed ran the two-way gate.
        self.fusion_gate = config["gtc_fusion_gate"] or "two_way"
        self.center_content = config["gtc_center_content"]
        self.clip_x0 = config["gtc_clip_x0"]
        self.standardize = config["gtc_standardize"]
        self.prediction = config["gtc_prediction"]
        self.denoiser_losses = config["gtc_denoiser_losses"]
        self.gen_detach_content = config["gtc_gen_detach_content"]
        self.seed = config["seed"]
        n_steps = config["diffusion_steps"]
        self.modalities = list(self.modality_roles)  # content roles, in order
        self.logger = getLogger()

        # define layers
        self.propagation = LightGCNPropagation(n_layers=config["n_layers"])
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # r_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # r_e
        self.projections = nn.ModuleDict()
        for name in self.modalities:
            self.projections[name] = nn.Linear(self.features[name].shape[1], self.embedding_size)
        self.schedule = NoiseSchedule(
            n_steps=n_steps, beta_start=config["beta_start"], beta_end=config["beta_end"]
        )
        self.denoisers = nn.ModuleDict(
            {
                name: MLPUNetDenoiser(
                    dim=self.embedding_size,
                    cond_dim=self.embedding_size,
                    hidden_size=config["gtc_denoiser_hidden_size"],
                )
                for name in (self.modalities if self.denoise else ())
            }
        )
        # Eq. 10: learnable temperature tau, stored as log(tau) to stay positive.
        self.log_fusion_temperature = nn.Parameter(
            torch.tensor(math.log(config["gtc_fusion_temperature"]))
        )
        if self.fusion_gate == "two_way":
            # Ours: a second option of Eq. 10 ("no content") with a learnable logit
            # (gtc_fusion_offset at the start), so that the gate can close. Registered only
            # then: a parameter without gradient would stop DistributedDataParallel.
            self.fusion_offset = nn.Parameter(torch.tensor(float(config["gtc_fusion_offset"])))
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss(norm=2)
        self._eval_cache: torch.Tensor | None = None
        self.balance_scores: list[float] = []

        # parameters initialization
        self.apply(xavier_normal_initialization)

    # -- representations ------------------------------------------------------------------
    def _encode(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Eq. 2: ``S`` and the content embeddings ``C_0`` of every node, ``[n_users + n_items, d]``.

        The parallel LightGCNs are linear and column-wise, so they run as one propagation of
        the side-by-side inputs ``[R_E | R_V | R_T]``.
        """
        users = self.user_embedding.weight
        inputs = [torch.cat([users, self.item_embedding.weight])]
        for name in self.modalities:
            items = self.projections[name](self.features[name])  # [n_items, d]
            # Users have no content: their input row in every modality is r_u (Sec. 3.2).
            inputs.append(torch.cat([users, items]))
        outputs = self.propagation(self.adjacency, torch.cat(inputs, dim=1))  # [N, (1 + M) d]
        s, *contents = outputs.split(self.embedding_size, dim=1)
        if self.center_content:
            contents = [self._center(c) for c in contents]
        return s, contents

    def _center(self, c: torch.Tensor) -> torch.Tensor:
        """``C_0`` less its mean over the users (user rows) and over the real items (item rows).

        A direction shared by every node's content (a sentence encoder's anisotropy, a feature
        offset, the projection's bias) would make Eq. 10 add nearly the same vector to every
        item: the scores would then grow with the norm of ``S``, a popularity ranking.
        """
        users, items = c[: self.n_users], c[self.n_users :]
        real_items = items[1:]  # RecBole's padding item 0 left out of the mean
        return torch.cat([users - users.mean(dim=0), items - real_items.mean(dim=0)])

    def _real_nodes(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of every user and item, RecBole's padding item 0 left out."""
        return torch.cat([rows[: self.n_users], rows[self.n_users + 1 :]])

    def _diffusion_stats(self, c0_all) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scale, clip)`` of one modality's diffusion space, from every real node's ``C_0``
        (all users and items, RecBole's padding item 0 left out), in training and evaluation
        alike: the per-column RMS (``gtc_standardize``; else 1) and the per-column range of the
        scaled content that bounds every x0 estimate (``gtc_clip_x0``; else None).

        Shapes:
            c0_all: ``[n_users + n_items, d]``; scale and clip: ``[d]``.
        """
        c0 = self._real_nodes(c0_all.detach())
        scale = c0.pow(2).mean(dim=0).sqrt().clamp(min=1e-8) if self.standardize else None
        if scale is None:
            scale = c0.new_ones(c0.shape[1])
        clip = (c0 / scale).abs().amax(dim=0) if self.clip_x0 else None
        return scale, clip

    def _generate(self, name, s, c0, stats, *, sampler, n_steps, generator=None) -> torch.Tensor:
        """Eq. 5: user-aware content ``C_bar_0`` by the reverse process conditioned on ``S``;
        ``stats`` from :meth:`_diffusion_stats` of all nodes."""
        scale, clip = stats
        c0 = c0 / scale
        noise = torch.randn(c0.shape, generator=generator, device=c0.device, dtype=c0.dtype)
        if self.sample_start == "content":
            last = torch.full((c0.shape[0],), self.schedule.n_steps - 1, device=c0.device)
            x_t = self.schedule.q_sample(c0, last, noise)  # Eq. 3 at t = T
        else:
            x_t = noise
        denoiser = self.denoisers[name]
        if self.training and self.denoiser_losses == "gen":
            # The generation path uses the denoiser as a fixed sampler: BPR and L_CON reach S
            # and C_0 through it, never its parameters, which only L_GEN (Eq. 4) trains.
            frozen = {key: value.detach() for key, value in denoiser.named_parameters()}

            def denoise(x, t):
                return torch.func.functional_call(denoiser, frozen, (x, t, s))
        elif not torch.is_grad_enabled():
            # Evaluation: S's part of the first layer and one timestep embedding per step are
            # computed once (the same function; issue "Paper settings at the speed ...").
            denoise = denoiser.bind(s)
        else:

            def denoise(x, t):
                return denoiser(x, t, s)

        # Each x0 estimate stays within the per-column range of C_0 (DDPM's clip_denoised): an
        # untrained eps prediction is amplified by sqrt((1 - abar_T) / abar_T) (12x at T = 500).
        kwargs = {"prediction": self.prediction, "generator": generator, "clip_x0": clip}
        if sampler == "ddpm":
            out = ddpm_sample(denoise, self.schedule, x_t, **kwargs)
        else:
            out = ddim_sample(denoise, self.schedule, x_t, n_steps=n_steps, **kwargs)
        return out * scale

    def _fuse(self, s, contents, s_mean_norm=None) -> torch.Tensor:
        """Eq. 10 (``gtc_fusion: gate``) or concatenation (the ablations' 'Base').

        ``s_mean_norm``: the mean row norm of ``S`` over every real node (``gtc_fusion_scale:
        mean``); from ``s`` itself when None (``s`` then holds every node)."""
        if not contents:
            return s
        if self.fusion == "concat":
            return torch.cat([s, *contents], dim=-1)
        fused = contents[0]
        for content in contents[1:]:
            fused = fused * content  # C_f = V_bar * T_bar
        cosine = F.cosine_similarity(s, fused, dim=-1)  # [N], before any rescaling
        if self.fusion_scale != "raw":
            # The content sets a direction, never the scale: C_f takes S's norm node by node
            # ('match'), or the mean norm of S over every node ('mean'), which leaves the
            # content a larger share of the rarely seen items, whose S is short.
            if self.fusion_scale == "match":
                target = s.norm(dim=-1, keepdim=True)
            else:
                target = self._mean_norm(s) if s_mean_norm is None else s_mean_norm
            fused = fused * (target / fused.norm(dim=-1, keepdim=True).clamp(min=1e-12))
        logit = cosine / self.log_fusion_temperature.exp()  # cos(S, C_f) / tau
        if self.fusion_gate == "softmax":
            # Eq. 10 as printed: a softmax over the one similarity of the node, identically 1.
            alpha = torch.softmax(logit[:, None], dim=-1)  # [N, 1]
        else:
            # 'two_way' (ours): a softmax over {use C_f: cos / tau, not: fusion_offset}.
            alpha = torch.sigmoid(logit - self.fusion_offset)[:, None]
        return s + alpha * fused  # S_bar = S + S_f

    def _mean_norm(self, s_all) -> torch.Tensor:
        """Mean row norm of ``S`` over every real node (padding item left out), detached."""
        return self._real_nodes(s_all.detach()).norm(dim=-1).mean()

    def _content_views(self, s, contents, stats, *, sampler, n_steps, generator=None):
        if not self.denoise:
            return contents
        return [
            self._generate(name, s, c0, stat, sampler=sampler, n_steps=n_steps, generator=generator)
            for name, c0, stat in zip(self.modalities, contents, stats)
        ]

    def evaluation_views(self):
        """``(S, C_0 per modality, generated views per modality)`` of every node, with the
        evaluation sampler and sampler noise seeded by ``seed``."""
        s, contents = self._encode()
        stats = [self._diffusion_stats(c) for c in contents]
        generator = torch.Generator(device=s.device).manual_seed(self.seed)
        views = self._content_views(
            s,
            contents,
            stats,
            sampler=self.eval_sampler,
            n_steps=self.eval_steps,
            generator=generator,
        )
        return s, contents, views

    def forward(self):
        """Fused representations of every node for evaluation, ``[n_users + n_items, D]``."""
        s, _, views = self.evaluation_views()
        fused = self._fuse(s, views)
        if views and self.fusion == "gate":
            users = slice(0, self.n_users)
            score = modality_balance_score(fused[users], [s[users], *(v[users] for v in views)])
            self.balance_scores.append(score)
            self.logger.info(f"GTC modality balance score (Sec. 4.5, all users): {score:.4f}")
        return fused

    def _representations(self) -> torch.Tensor:
        if self.training:
            return self.forward()
        if self._eval_cache is None:
            with torch.no_grad():
                self._eval_cache = self.forward()
        return self._eval_cache

    def train(self, mode: bool = True):
        # Every switch (a training epoch, a new evaluation pass) drops the cached evaluation
        # representations, so that they are recomputed from the current weights.
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- losses ---------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        s, contents = self._encode()
        # Only the batch's nodes are denoised, generated and fused.
        nodes, inverse = torch.unique(
            torch.cat([user, pos_item + self.n_users, neg_item + self.n_users]), return_inverse=True
        )
        u_idx, pos_idx, neg_idx = inverse.split(user.shape[0])
        s_b, contents_b = s[nodes], [c[nodes] for c in contents]
        stats = [self._diffusion_stats(c) for c in contents] if self.denoise else []

        gen_loss = s.new_zeros(())
        if self.denoise:
            for name, c0, (scale, _) in zip(self.modalities, contents_b, stats):
                t = self.schedule.sample_timesteps(c0.shape[0])
                eps = torch.randn_like(c0)
                # The paper lets L_GEN train the content encoders through C_t (with a noise
                # start, the generation never reads C_0: this is their only path to the loss).
                target = (c0.detach() if self.gen_detach_content else c0) / scale
                c_t = self.schedule.q_sample(target, t, eps)  # Eq. 3
                if self.prediction == "eps":
                    target = eps  # Eq. 4
                gen_loss = gen_loss + F.mse_loss(self.denoisers[name](c_t, t, s_b), target)
        views = self._content_views(
            s_b, contents_b, stats, sampler="ddim", n_steps=self.train_steps
        )
        fused = self._fuse(s_b, views, s_mean_norm=self._mean_norm(s))

        u, pos, neg = fused[u_idx], fused[pos_idx], fused[neg_idx]
        bpr = self.bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))  # Eq. 11
        con_loss = s.new_zeros(())
        if views and self.alignment != "none":
            items = torch.unique(pos_idx)  # distinct positive items of the batch
            if items.shape[0] > 1:
                batch_views = [s_b[items], *(v[items] for v in views)]
                if self.alignment == "tc":
                    con_loss = total_correlation_loss(  # Eq. 7-9
                        batch_views,
                        temperature=self.tc_temperature,
                        normalize=self.tc_normalize,
                        include_positive=self.tc_include_positive,
                    )
                else:
                    con_loss = pairwise_contrastive_loss(
                        batch_views, temperature=self.tc_temperature, normalize=self.tc_normalize
                    )
        reg = self.reg_loss(
            self.user_embedding(user),
            self.item_embedding(pos_item),
            self.item_embedding(neg_item),
            require_pow=self.require_pow,
        ).squeeze(0)  # RecBole's EmbLoss returns shape [1]
        # Eq. 12: L_BPR + w1 L_GEN + w2 L_CON + L2
        return bpr + self.gen_weight * gen_loss + self.tc_weight * con_loss + self.reg_weight * reg

    # -- scoring --------------------------------------------------------------------------
    def predict(self, interaction):
        fused = self._representations()
        user = fused[interaction[self.USER_ID]]
        item = fused[interaction[self.ITEM_ID] + self.n_users]
        return (user * item).sum(-1)

    def full_sort_predict(self, interaction):
        fused = self._representations()
        user = fused[interaction[self.USER_ID]]  # [B, D]
        return user @ fused[self.n_users :].T  # [B, n_items]
