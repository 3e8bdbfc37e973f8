"""Converters that turn raw public recommendation data into recbole_mm datasets.

Each tool is a module with importable functions and an argparse command line:

- ``python -m dataset_tools.amazon``: Amazon review data (2014 and 2018 releases) to RecBole
  atomic files plus text and image feature files, with k-core filtering and either the MMRec
  random 8:1:1 split or a time-stamped file for leave-one-out evaluation;
- ``python -m dataset_tools.mmrec``: a dataset already in MMRec's format (``x_label`` split and
  ``text_feat.npy`` / ``image_feat.npy``) to the same layout, keeping its split exactly.

The files they write are described in ``docs/dataset_tools.md``. Nothing here imports RecBole or
a neural network at package import.
"""
