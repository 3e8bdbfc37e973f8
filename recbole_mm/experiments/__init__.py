"""What runs experiments over the models, shared by the benchmark and the search.

- ``results``: the Markdown, CSV and JSON tables of both (:mod:`recbole_mm.benchmark` runs,
  :mod:`recbole_mm.hyper` trials);
- ``timer``: per-phase wall times as a trainer mixin (``with_timer``);
- ``measure``: one measured run of one model and seed (a benchmark worker's job);
- ``search``: the search driver that the hyperopt and Ray backends share.

These modules import torch and RecBole only inside the functions that need them.
"""
