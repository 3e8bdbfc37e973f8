"""How much ranking signal the item content alone carries, scored by RecBole's evaluator.

    python benchmarks/content_probe.py --dataset=tiktok-dev --data_path=dataset

For every content modality of a dataset (and for all of them side by side), each user is
represented by the mean of the standardised features of their training items, and every item is
scored by the cosine between that profile and its features (a training-free content k-NN). The
same split, masking and metrics as any model's run: RecBole's full-sort evaluator on the
validation and test loaders. Popularity (training counts) is printed beside it. A content that
scores near random here cannot be expected to lift a collaborative model; one that scores near
or above popularity can. Prints one JSON line per probe.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.trainer import Trainer
from recbole.utils import InputType

from recbole_mm.model.general_recommender.vbpr import standardize_block
from recbole_mm.quick_start import prepare


class ContentProbe(GeneralRecommender):
    """Training-free scorer: cosine(user profile, item features), or item popularity."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset, features: torch.Tensor | None):
        super().__init__(config, dataset)
        inter = dataset.inter_feat
        users, items = inter[self.USER_ID], inter[self.ITEM_ID]
        counts = torch.bincount(items, minlength=self.n_items).float()
        self.register_buffer("popularity", counts)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # RecBole's Trainer builds an optimizer
        if features is None:
            self.items_repr = None
            return
        items_repr = F.normalize(features, dim=-1)  # [n_items, d]
        profile = torch.zeros(self.n_users, features.shape[1]).index_add_(0, users, features[items])
        self.register_buffer("items_repr", items_repr)
        self.register_buffer("profiles", F.normalize(profile, dim=-1))  # [n_users, d]

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        if self.items_repr is None:
            return self.popularity.expand(len(user), -1).clone()
        return self.profiles[user] @ self.items_repr.T  # [B, n_items]

    def calculate_loss(self, interaction):  # pragma: no cover - never trained
        raise NotImplementedError

    def predict(self, interaction):  # pragma: no cover - full-sort evaluation only
        raise NotImplementedError


def probe(dataset: str, config_dict: dict) -> list[dict]:
    config, data, train, valid, test = prepare("VBPR", dataset, None, config_dict, overrides={})
    names = list(data.modalities)
    blocks = {m: standardize_block(data.modality_features(m)) for m in names}
    variants = {"popularity": None, **blocks}
    if len(names) > 1:
        variants["+".join(names)] = torch.cat([blocks[m] for m in names], dim=1)
    results = []
    for name, features in variants.items():
        model = ContentProbe(config, train._dataset, features)
        trainer = Trainer(config, model)
        row = {"dataset": dataset, "probe": name}
        for phase, loader in (("valid", valid), ("test", test)):
            result = trainer.evaluate(loader, load_best_model=False, show_progress=False)
            row[phase] = {k: round(float(v), 4) for k, v in result.items()}
        results.append(row)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    config = {"seed": args.seed, "state": "WARNING", "show_progress": False}
    if args.data_path:
        config["data_path"] = args.data_path
    for row in probe(args.dataset, config):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
