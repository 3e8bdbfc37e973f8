"""RecBole's Config, extended with recbole_mm's property files.

Precedence, lowest first (RecBole's own rule, with our files inside the "internal" layer):
RecBole's internal properties (overall, model, dataset, model-type quick-start files) <
recbole_mm's ``properties/overall.yaml`` < ``properties/model/<Model>.yaml`` <
``properties/dataset/<dataset>.yaml`` < config files < config dict < command line.
"""

from __future__ import annotations

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_mm import properties


class Config(RecBoleConfig):
    """Drop-in replacement for :class:`recbole.config.Config` that knows recbole_mm."""

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            from recbole_mm.utils import get_model

            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        dataset_file = properties.dataset_file(dataset)
        for file in (properties.overall_file(), properties.model_file(model), dataset_file):
            if file.is_file():
                loaded = self._update_internal_config_dict(str(file)) or {}
                if file == dataset_file:
                    self.parameters["Dataset"] += [
                        k for k in loaded if k not in self.parameters["Dataset"]
                    ]

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        # RecBole's sequential models default to loss_type CE, which RecBole rejects unless
        # train_neg_sample_args is None, yet its overall.yaml sets a uniform sampler: without
        # this, `run_recbole --model=SASRec` fails out of the box. A user's explicit value wins.
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final

    def _set_default_parameters(self):
        from recbole_mm.data.embedded import default_cache_dir, is_embedded

        # Embedded datasets are built into a cache folder unless the user names a data_path.
        if is_embedded(self.dataset) and "data_path" not in self.external_config_dict:
            self.final_config_dict["data_path"] = str(default_cache_dir() / "datasets")
        super()._set_default_parameters()
