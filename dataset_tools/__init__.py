"""Converters that turn raw public recommendation data into recbole_mm datasets.

Each tool is a module with importable functions and an argparse command line:

- ``python -m dataset_tools.amazon``: Amazon review data (2014 and 2018 releases) to RecBole
  atomic files plus text and image feature files, with k-core filtering and either the MMRec
  random 8:1:1 split or a time-stamped file for leave-one-out evaluation;
- ``python -m dataset_tools.mmrec``: a dataset already in MMRec's format (``x_label`` split and
  ``text_feat.npy`` / ``image_feat.npy``) to the same layout, keeping its split exactly;
- ``python -m dataset_tools.mmgcn``: MovieLens, TikTok and Kwai in the MMGCN/MMGRec layout;
- ``python -m dataset_tools.movielens_link``: the ml-100k -> MovieLens-1M id map (shipped in
  ``recbole_mm/data``) that re-aligns RecBole's ``ml-100k.link`` for ml-100k-mm's ``kg`` modality;
- ``python -m dataset_tools.control``: control modalities (a collaborative SVD factor of all
  splits mixed with noise at a chosen correlation) added to an existing dataset: a control,
  never a benchmark.

The files they write are described in ``docs/dataset_tools.md``. Nothing here imports RecBole or
a neural network at package import.
"""
