"""GTC and LightGCN at Amazon-Sports size with random data: time per training batch and evaluation.

Builds a random bipartite graph with the published size of the MMRec Sports split (35,598 users,
18,357 items, 296,337 interactions, 80% of them for training) and random 4096-d "image" and
384-d "text" features, then measures on the current device:

* training: ``--batches`` batches of ``--batch-size`` (BPR triples with uniform negatives), each
  a full forward, backward and Adam step, extrapolated to one epoch; the forward time split into
  graph propagation (Eq. 2), diffusion (L_GEN and the training generation, Eq. 3-5), the
  alignment loss (Eq. 6-9) and the rest; plus each part timed on its own, forward + backward;
* evaluation, once per sampler: the evaluation representations (propagation + generation over
  every node) and the full ranking of every user against every item (top-50, in user chunks).
  The DDPM sampler's T steps are extrapolated from ``--ddpm-steps`` timed steps when given;
* the same for RecBole's LightGCN (its YAML's sizes: d = 64, 2 layers), on the same graph, the
  same batches and the same device, after GTC is freed: one training step is a full propagation
  (Eq. 7-8 of LightGCN), BPR + L2 and an Adam step; one evaluation is one propagation and the
  same ranking. ``ratio`` holds GTC's time over LightGCN's per training batch (so per epoch)
  and per evaluation with GTC's DDIM sampler (``--skip-lightgcn`` leaves LightGCN out).

Peak resident memory (ru_maxrss) is printed after each phase, and on CUDA the peak GPU memory of
GTC (``peak_gpu_mb``) and of LightGCN (``lightgcn.peak_gpu_mb``). Results go to
``benchmark_results/gtc_scale/<device>.json``.

    python benchmarks/gtc_scale.py --batches 5 --ddpm-steps 20
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import yaml

from recbole_mm.data.adjacency import ADJACENCY_NORMS
from recbole_mm.model.general_recommender import gtc as gtc_module
from recbole_mm.model.general_recommender.gtc import GTC
from recbole_mm.model.layers import diffusion
from recbole_mm.model.layers.total_correlation import total_correlation_loss

ROOT = Path(__file__).resolve().parents[1]
SPORTS = {"users": 35_598, "items": 18_357, "interactions": 296_337}
SIZE = dict(SPORTS)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Accumulates wall time per label; synchronises CUDA around each reading."""

    def __init__(self, device):
        self.device = device
        self.totals: dict[str, float] = {}
        self.active: set[str] = set()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, label):
        if label in self.active:  # nested call of the same part: counted by the outer one
            yield
            return
        self.active.add(label)
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.active.discard(label)
            self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - start


class FakeDataset:
    """What GTC reads from a RecBole dataset: id counts, training graph, modality features."""

    def __init__(self, users, items, features):
        self.inter_feat = {"user_id": users, "item_id": items}
        self._features = features
        self.modalities = tuple(features)

    def num(self, field):
        return (SIZE["users"] if field == "user_id" else SIZE["items"]) + 1  # + padding

    def modality_features(self, name):
        return self._features[name]

    def normalized_adjacency(self, norm="symmetric"):
        users, items = self.inter_feat["user_id"], self.inter_feat["item_id"]
        n_users, n_items = self.num("user_id"), self.num("item_id")
        return ADJACENCY_NORMS[norm](users, items, n_users=n_users, n_items=n_items)

    def inter_matrix(self, form="coo"):
        """The training pairs as RecBole's ``Dataset.inter_matrix`` returns them (LightGCN)."""
        users, items = self.inter_feat["user_id"].numpy(), self.inter_feat["item_id"].numpy()
        shape = (self.num("user_id"), self.num("item_id"))
        return scipy.sparse.coo_matrix((np.ones(len(users)), (users, items)), shape=shape)


def build(args, device):
    rng = np.random.default_rng(0)
    n_train = int(0.8 * SIZE["interactions"])
    # Random pairs with a long-tailed item popularity, ids from 1 (0 is RecBole's padding).
    users = torch.from_numpy(rng.integers(1, SIZE["users"] + 1, n_train))
    popularity = rng.zipf(1.3, SIZE["items"] * 4) % SIZE["items"]
    items = torch.from_numpy(rng.choice(popularity, n_train) + 1)
    features = {}
    for name, dim in (("image", 4096), ("text", 384)):
        matrix = torch.from_numpy(rng.standard_normal((SIZE["items"] + 1, dim), np.float32))
        matrix[0] = 0
        features[name] = matrix
    config = yaml.safe_load((ROOT / "properties/model/GTC.yaml").read_text())
    config.update(
        {
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "NEG_PREFIX": "neg_",
            "device": device,
            "seed": 2020,
            "dataset": "amazon-sports (random)",
            "modalities": {"image": {"dim": 4096}, "text": {"dim": 384}},
            "diffusion_steps": args.steps,
        }
    )
    config.update(args.override)
    torch.manual_seed(0)
    model = GTC(config, FakeDataset(users, items, features)).to(device)
    return model, users, items


def instrument(model, clock):
    """Time the forward parts of GTC by wrapping its building blocks (instance and module)."""
    encode, generate = model._encode, model._generate
    model._encode = lambda: _timed(clock, "graph", encode)
    model._generate = lambda *a, **k: _timed(clock, "diffusion", generate, *a, **k)
    for denoiser in model.denoisers.values():
        forward = denoiser.forward
        denoiser.forward = lambda *a, _f=forward, **k: _timed(clock, "diffusion", _f, *a, **k)
    for name in ("total_correlation_loss", "pairwise_contrastive_loss"):
        original = getattr(gtc_module, name)
        setattr(
            gtc_module, name, lambda *a, _f=original, **k: _timed(clock, "alignment", _f, *a, **k)
        )


def _timed(clock, label, fn, *args, **kwargs):
    with clock(label):
        return fn(*args, **kwargs)


def batches(users, items, n_items, batch_size, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        index = torch.randint(0, users.shape[0], (batch_size,), generator=g)
        yield {
            "user_id": users[index],
            "item_id": items[index],
            "neg_item_id": torch.randint(1, n_items, (batch_size,), generator=g),
        }


def train_phase(model, users, items, args, device, result):
    clock = Clock(device)
    instrument(model, clock)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    n_train = users.shape[0]
    per_epoch = -(-n_train // args.batch_size)
    warm = list(batches(users, items, model.n_items, args.batch_size, 1, seed=99))
    for batch in warm:  # one untimed batch: allocator and kernel warm-up
        batch = {k: v.to(device) for k, v in batch.items()}
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    clock.totals.clear()
    for batch in batches(users, items, model.n_items, args.batch_size, args.batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with clock("step"):
            with clock("forward"):
                loss = model.calculate_loss(batch)
            with clock("backward+adam"):
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    t = {k: v / args.batches for k, v in clock.totals.items()}
    t["forward_other"] = t["forward"] - sum(
        t.get(k, 0.0) for k in ("graph", "diffusion", "alignment")
    )
    result["train"] = {
        "batches_timed": args.batches,
        "batch_size": args.batch_size,
        "batches_per_epoch": per_epoch,
        "s_per_batch": t,
        "epoch_s_extrapolated": t["step"] * per_epoch,
        "peak_rss_mb": peak_mb(),
    }


def isolated_parts(model, users, items, args, device, result):
    """Each part alone, forward + backward, on one batch's nodes."""
    clock = Clock(device)
    batch = next(batches(users, items, model.n_items, args.batch_size, 1, seed=7))
    nodes = torch.unique(
        torch.cat(
            [
                batch["user_id"],
                batch["item_id"] + model.n_users,
                batch["neg_item_id"] + model.n_users,
            ]
        )
    ).to(device)
    for _ in range(2):  # the second round is the measurement
        clock.totals.clear()
        with clock("graph (Eq. 2, all nodes)"):
            s, contents = model._encode()
            (s.sum() + sum(c.sum() for c in contents)).backward()
        s, contents = model._encode()
        s_b = s[nodes].detach()
        views = [c[nodes].detach() for c in contents]
        with clock("diffusion (L_GEN + generation, batch nodes)"):
            loss = 0
            for name, c0, c_all in zip(model.modalities, views, contents):
                t = model.schedule.sample_timesteps(c0.shape[0])
                eps = torch.randn_like(c0)
                loss = (
                    loss
                    + (
                        (model.denoisers[name](model.schedule.q_sample(c0, t, eps), t, s_b) - eps)
                        ** 2
                    ).mean()
                )
                loss = (
                    loss
                    + model._generate(
                        name,
                        s_b,
                        c0,
                        model._diffusion_stats(c_all),
                        sampler="ddim",
                        n_steps=model.train_steps,
                    ).sum()
                )
            loss.backward()
        items_b = torch.unique(batch["item_id"]).to(device) + model.n_users
        tc_views = [
            s[items_b].detach().requires_grad_(),
            *(c[items_b].detach().requires_grad_() for c in contents),
        ]
        with clock(f"alignment (Eq. 6-9, {items_b.shape[0]} items)"):
            total_correlation_loss(tc_views).backward()
        model.zero_grad(set_to_none=True)
    result["isolated_fwd_bwd_s"] = dict(clock.totals)


def eval_phase(model, args, device, result):
    model.eval()
    samplers = [("ddim", model.eval_steps)]
    if not args.skip_ddpm:
        samplers.append(("ddpm", model.schedule.n_steps))
    result["eval"] = {}
    for sampler, steps in samplers:
        clock = Clock(device)
        model.eval_sampler = sampler
        timed_steps = steps
        if sampler == "ddpm" and args.ddpm_steps and args.ddpm_steps < steps:
            # Time the first ddpm_steps of the T-step chain by running a shorter schedule of the
            # same per-step cost, then scale to T.
            timed_steps = args.ddpm_steps
            full = model.schedule
            model.schedule = diffusion.NoiseSchedule(n_steps=timed_steps).to(device)
        with torch.no_grad():
            model.train()  # drop any cache
            model.eval()
            with clock("representations"):
                fused = model._representations()
            with clock("ranking"):
                items = fused[model.n_users :]
                for start in range(0, model.n_users, args.eval_users):
                    scores = fused[start : start + args.eval_users] @ items.T
                    scores.topk(50, dim=1)
        if timed_steps != steps:
            model.schedule = full
        t = dict(clock.totals)
        record = {"sampler": sampler, "steps": steps, "timed_steps": timed_steps, **t}
        if timed_steps != steps:
            # Split the representation time into the part that scales with the steps (the
            # denoiser calls) and the rest, using the DDIM measurement as the fixed part.
            fixed = result["eval"]["ddim"]["representations"]
            per_step = max(t["representations"] - fixed, 0.0) / (timed_steps - model.eval_steps)
            record["representations_extrapolated"] = fixed + per_step * steps
        record["total_s"] = (
            record.get("representations_extrapolated", t["representations"]) + t["ranking"]
        )
        record["peak_rss_mb"] = peak_mb()
        result["eval"][sampler] = record


def lightgcn_phase(users, items, args, device, result):
    """RecBole's LightGCN on the same graph and batches as GTC: train step and evaluation."""
    from recbole.model.general_recommender.lightgcn import LightGCN

    config = {"learning_rate": 0.001, "require_pow": False}  # RecBole's overall defaults
    config.update(yaml.safe_load(_recbole_yaml("LightGCN").read_text()))
    config.update({"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "NEG_PREFIX": "neg_"})
    config["device"] = device
    # YAML 1.1 reads RecBole's "1e-05" as a string; RecBole's Config evaluates it.
    config["reg_weight"] = float(config["reg_weight"])
    torch.manual_seed(0)
    start = time.perf_counter()
    model = LightGCN(config, FakeDataset(users, items, {})).to(device)
    build_s = time.perf_counter() - start
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])

    def step(batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()  # propagation, BPR + L2
        optimizer.step()

    model.train()
    for batch in batches(users, items, model.n_items, args.batch_size, 1, seed=99):
        step(batch)  # one untimed batch: allocator and kernel warm-up
    clock = Clock(device)
    for batch in batches(users, items, model.n_items, args.batch_size, args.batches):
        with clock("step"):
            step(batch)
    step_s = clock.totals["step"] / args.batches
    per_epoch = -(-users.shape[0] // args.batch_size)
    model.eval()
    clock = Clock(device)
    with torch.no_grad():
        with clock("representations"):
            user_e, item_e = model.forward()  # what full_sort_predict caches
        with clock("ranking"):
            for start in range(0, model.n_users, args.eval_users):
                (user_e[start : start + args.eval_users] @ item_e.T).topk(50, dim=1)
    record = {
        "config": {k: config[k] for k in ("embedding_size", "n_layers", "reg_weight")},
        "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "build_s": build_s,
        "s_per_batch": step_s,
        "epoch_s_extrapolated": step_s * per_epoch,
        "eval": {**clock.totals, "total_s": sum(clock.totals.values())},
        "peak_rss_mb": peak_mb(),
    }
    if device.type == "cuda":
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["lightgcn"] = record
    gtc_eval = result["eval"]["ddim"]["total_s"]
    result["ratio"] = {
        "train_batch_gtc_over_lightgcn": result["train"]["s_per_batch"]["step"] / step_s,
        "eval_ddim_gtc_over_lightgcn": gtc_eval / record["eval"]["total_s"],
    }


def _recbole_yaml(model):
    import recbole

    return Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=5, help="training batches timed")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=300, help="T (paper's optimum on Sports)")
    parser.add_argument("--ddpm-steps", type=int, default=0, help="DDPM steps timed (0: all T)")
    parser.add_argument("--skip-ddpm", action="store_true")
    parser.add_argument("--skip-lightgcn", action="store_true", help="time GTC alone")
    parser.add_argument("--eval-users", type=int, default=4096, help="users scored per chunk")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the sizes (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--override", type=json.loads, default={}, help="JSON dict of GTC keys")
    parser.add_argument("--out", default=str(ROOT / "benchmark_results" / "gtc_scale"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    SIZE.update({k: max(int(v * args.scale), 64) for k, v in SPORTS.items()})
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": SIZE,
        "args": vars(args),
    }
    model, users, items = build(args, device)
    result["n_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["after_build_peak_rss_mb"] = peak_mb()
    train_phase(model, users, items, args, device, result)
    isolated_parts(model, users, items, args, device, result)
    eval_phase(model, args, device, result)
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if not args.skip_lightgcn:
        # Free GTC first, so that LightGCN's peak GPU memory is its own.
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        lightgcn_phase(users, items, args, device, result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{device.type}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
