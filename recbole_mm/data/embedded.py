"""Embedded datasets: built on first use from files that ship inside the ``recbole`` package.

``ml-100k-mm`` is MovieLens-100K (RecBole's ``dataset_example/ml-100k``) with two content
modalities added. RecBole redirects the name ``ml-100k`` to its own example folder, hence a name
of our own. The folder ``<cache>/datasets/ml-100k-mm/`` (see :func:`default_cache_dir`) holds:

* ``ml-100k-mm.{inter,item,user,kg}``: byte copies of the shipped files, so that RecBole's
  general, sequential and knowledge-aware baselines run on exactly the same data;
* ``ml-100k-mm.link``: the shipped ``ml-100k.link`` re-aligned to ml-100k's item ids. The shipped
  file is keyed by MovieLens-1M movie ids (ml-100k item 313 is *Titanic*, ML-1M movie 313 *The
  Swan Princess*); :data:`ML1M_MAP`, written by ``python -m dataset_tools.movielens_link``, maps
  each ml-100k item to its ML-1M id, and :func:`realign_link` reads the link through it;
* ``ml-100k-mm.text.{npy,tokens}``: 384-d all-MiniLM-L6-v2 embeddings of one sentence per film
  (:data:`TEXT_TEMPLATE`, :func:`film_sentence`), every item of ``ml-100k.item``;
* ``ml-100k-mm.kg.{npy,tokens}``: 64-d embeddings of each film's 1-hop Freebase neighbourhood
  (:func:`kg_features`) through the re-aligned link; films without a link or without a
  neighbour shared with another film have no row, and the dataset's ``missing_feature_policy``
  fills them;
* ``ml-100k-mm.build.json``: what was built, how, the counts, the link's coverage, the build
  time, and every other file's size and SHA-256, checked on each use (:func:`build_problems`).
  It is written last, and the folder only appears, by an atomic rename, once everything is in
  it.

Rebuilding on the same machine gives byte-identical feature files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from tqdm.auto import tqdm

from recbole_mm.data.encoders import DEFAULT_TEXT_MODEL, encode_texts
from recbole_mm.data.features import feature_file_names, save_modality

logger = logging.getLogger("recbole_mm")

CACHE_ENV = "RECBOLE_MM_CACHE"
# Bump when the files an embedded build writes change, so that old builds are not taken as current.
# 2: ml-100k-mm.link and the kg modality re-aligned to ml-100k's item ids.
# 3: the manifest records every file's size and SHA-256 ("files").
BUILD_FORMAT = 3
ATOMIC_SUFFIXES = ("inter", "item", "user", "kg", "link")

TEXT_TEMPLATE = "{title} ({year}). Genres: {genres}."
KG_DIM = 64
KG_MIN_FILMS = 2  # a (relation, entity) feature must be shared by at least this many films
INVERSE_PREFIX = "~"
# ml-100k item id -> MovieLens-1M movie id, the ids RecBole's ml-100k.link is keyed by (package
# data, written by dataset_tools/movielens_link.py; docs/datasets.md has the match report).
ML1M_MAP = "ml-100k-to-ml-1m.tsv"


@dataclasses.dataclass(frozen=True)
class EmbeddedDataset:
    """An embedded dataset: where its raw files come from and the function that builds it."""

    name: str
    source: str  # RecBole example dataset (recbole/dataset_example/<source>) it is built from
    modalities: tuple[str, ...]
    description: str
    build: Callable[..., dict]  # build(folder, *, show_progress) -> summary for the manifest

    @property
    def manifest(self) -> str:
        """Name of the build's manifest file."""
        return manifest_name(self.name)

    def files(self) -> list[str]:
        """Names of every file a complete build holds, the manifest included."""
        names = [f"{self.name}.{suffix}" for suffix in ATOMIC_SUFFIXES]
        for modality in self.modalities:
            names.extend(feature_file_names(self.name, modality))
        return names + [self.manifest]


def manifest_name(name: str) -> str:
    return f"{name}.build.json"


def default_cache_dir() -> Path:
    """``$RECBOLE_MM_CACHE`` if set, else ``~/.cache/recbole_mm``; datasets live in ``datasets/``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recbole_mm"


def is_embedded(name: str) -> bool:
    """Whether ``name`` is a dataset this package builds itself."""
    return name in EMBEDDED_DATASETS


def ensure_embedded_dataset(
    name: str, folder: str | Path | None = None, *, show_progress: bool = True
) -> Path:
    """Return the folder holding the files of embedded dataset ``name``, building them if absent.

    The build goes into a temporary sibling folder (``.<name>.building-*``) that is renamed to
    ``folder`` when complete, so an interrupted build never leaves a folder that looks complete;
    on an exception the temporary folder is removed. A complete earlier build is reused: every
    file the manifest lists has the size and SHA-256 it records (:func:`build_problems`).

    A folder that holds our manifest but fails that check (a file truncated, changed or missing)
    or was built in an older :data:`BUILD_FORMAT` is ours to replace: it is rebuilt, with a
    warning naming what was wrong, and swapped in when the new build is complete.

    Args:
        name: a key of :data:`EMBEDDED_DATASETS`.
        folder: the dataset folder itself (RecBole's final ``config["data_path"]``); default
            ``default_cache_dir() / "datasets" / name``.
        show_progress: show tqdm bars while building.

    Raises:
        ValueError: ``name`` is not an embedded dataset.
        FileExistsError: ``folder`` exists, is not empty, is not a complete build and has no
            readable manifest of ours (or one of a newer format); the message names the files
            and the folder to delete.
    """
    if not is_embedded(name):
        raise ValueError(
            f"'{name}' is not an embedded dataset; embedded datasets are {sorted(EMBEDDED_DATASETS)}."
        )
    spec = EMBEDDED_DATASETS[name]
    folder = Path(folder) if folder is not None else default_cache_dir() / "datasets" / name
    stale = None
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    elif folder.exists():
        manifest, problems = build_problems(folder, spec)
        if not problems:
            logger.debug("Using the embedded dataset %s built in %s.", name, folder)
            return folder
        if manifest is None or manifest["format"] > BUILD_FORMAT:
            raise FileExistsError(
                f"{folder} exists but is not a complete build of the embedded dataset '{name}' "
                f"({'; '.join(problems)}). Delete the folder (rm -r '{folder}') to have it "
                f"rebuilt, or set data_path elsewhere."
            )
        logger.warning(
            "The embedded dataset %s in %s is damaged or outdated (%s); rebuilding it.",
            name,
            folder,
            "; ".join(problems),
        )
        stale = folder

    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "Building the embedded dataset %s in %s from RecBole's %s (%s); this happens once.",
        name,
        folder,
        spec.source,
        spec.description,
    )
    start = time.perf_counter()
    # Not tempfile.mkdtemp: its mode 0700 would survive the rename and lock others out of a
    # shared cache.
    tmp = folder.parent / f".{name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        summary = spec.build(tmp, show_progress=show_progress)
        seconds = time.perf_counter() - start
        manifest = {"format": BUILD_FORMAT, "dataset": name, **summary}
        manifest["build_seconds"] = round(seconds, 1)
        manifest["files"] = {f: _file_record(tmp / f) for f in spec.files() if f != spec.manifest}
        (tmp / spec.manifest).write_text(json.dumps(manifest, indent=2) + "\n")
        if stale is not None and not _replace_stale(stale, spec):
            shutil.rmtree(tmp, ignore_errors=True)
            logger.info("%s was rebuilt meanwhile by another process; using it.", folder)
            return folder
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished the same build first: keep its folder.
            if build_problems(folder, spec)[1]:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            logger.info("%s was built meanwhile by another process; using it.", folder)
            return folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Built %s in %.1f s.", folder, seconds)
    return folder


def _replace_stale(folder: Path, spec: EmbeddedDataset) -> bool:
    """Move a damaged build of ours out of the way; False if it was repaired meanwhile."""
    if not build_problems(folder, spec)[1]:
        return False
    aside = folder.parent / f".{spec.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process moved it first; its new build may follow
        return True
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def build_problems(folder: str | Path, spec: EmbeddedDataset) -> tuple[dict | None, list[str]]:
    """Check a build folder against its manifest.

    Every file of ``spec.files()`` must exist and have the size and SHA-256 the manifest records
    (the files are a few MB, so the check costs tens of milliseconds), and the manifest must be
    of the current :data:`BUILD_FORMAT`.

    Returns:
        ``(manifest, problems)``: the manifest if it is readable and names this dataset (the
        folder is then ours), else ``None``; and one line per problem, naming the file; empty
        when the build is complete.
    """
    folder = Path(folder)
    path = folder / spec.manifest
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or manifest.get("dataset") != spec.name:
            raise ValueError
        if not isinstance(manifest.get("format"), int):
            raise ValueError
    except FileNotFoundError:
        manifest, problems = None, [f"{spec.manifest} is missing"]
    except (OSError, ValueError):
        manifest, problems = None, [f"{spec.manifest} is unreadable or not ours"]
    else:
        problems = []
        if manifest["format"] != BUILD_FORMAT:
            problems.append(
                f"{spec.manifest} is of build format {manifest['format']}, this version reads "
                f"format {BUILD_FORMAT}"
            )
    # Sizes and checksums can only be checked against a manifest of the current format.
    records = manifest.get("files", {}) if manifest and not problems else None
    for name in spec.files():
        file = folder / name
        if name == spec.manifest:
            continue
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif records is None:
            continue
        elif name not in records:
            problems.append(f"{name} is not recorded in {spec.manifest}")
        elif (size := file.stat().st_size) != records[name]["size"]:
            problems.append(f"{name} has {size} bytes, the build wrote {records[name]['size']}")
        elif _file_record(file)["sha256"] != records[name]["sha256"]:
            problems.append(f"{name} differs from what the build wrote (SHA-256)")
    return manifest, problems


# ---------------------------------------------------------------------------------------------
# ml-100k-mm


def recbole_example_folder(source: str) -> Path:
    """Folder of an example dataset shipped inside the installed ``recbole`` package."""
    return Path(str(importlib.resources.files("recbole"))) / "dataset_example" / source


_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+), (?P<article>The|A|An|La|Le|Les|L'|Il|Der|Die|Das|Det|El)$"
)
_UNKNOWN = {"unknown", "unkonwn", ""}  # ml-100k item 267 reads "unkonwn" for title and year


def _front_article(part: str) -> str:
    match = _TRAILING_ARTICLE.match(part.strip())
    if not match:
        return part.strip()
    article = match["article"]
    return article + match["body"] if article.endswith("'") else f"{article} {match['body']}"


def natural_title(title: str) -> str:
    """MovieLens title with trailing articles moved to the front, also in a parenthesised
    alternative title: ``"Big Blue, The (Grand bleu, Le)"`` -> ``"The Big Blue (Le Grand bleu)"``.
    """
    match = re.match(r"^(?P<main>[^(]+?)\s*\((?P<alt>[^()]*)\)$", title.strip())
    if match:
        return f"{_front_article(match['main'])} ({_front_article(match['alt'])})"
    return _front_article(title)


def film_sentence(title: str, year: str, genres: Sequence[str]) -> str:
    """The sentence that stands for a film in the ``text`` modality.

    :data:`TEXT_TEMPLATE` is ``"{title} ({year}). Genres: {genres}."`` with the title from
    :func:`natural_title` and the genres joined by ``", "`` in file order. The genre ``unknown``
    is left out, and so is a clause whose value is unknown: ``" ({year})"`` when the year is not
    four digits, ``" Genres: ..."`` when no genre is left. An unknown title reads
    ``"Unknown film"``.

    Example: ``film_sentence("Toy Story", "1995", ["Animation", "Children's", "Comedy"])`` is
    ``"Toy Story (1995). Genres: Animation, Children's, Comedy."``.
    """
    title = "Unknown film" if title.strip().lower() in _UNKNOWN else natural_title(title)
    genres = [g for g in genres if g.lower() not in _UNKNOWN]
    year = year.strip()
    if re.fullmatch(r"\d{4}", year) and genres:
        return TEXT_TEMPLATE.format(title=title, year=year, genres=", ".join(genres))
    head = f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title
    return f"{head}. Genres: {', '.join(genres)}." if genres else f"{head}."


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """Field names (type suffix removed) and rows of a RecBole atomic file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line]


def load_ml1m_map() -> dict[str, str]:
    """ml-100k item id -> MovieLens-1M movie id, from the packaged :data:`ML1M_MAP`.

    Items the map leaves unmatched (see ``dataset_tools.movielens_link``) are absent.
    """
    text = importlib.resources.files("recbole_mm.data").joinpath(ML1M_MAP).read_text("utf-8")
    lines = text.splitlines()
    if lines[0].split("\t")[:2] != ["ml100k_item", "ml1m_movie"]:
        raise ValueError(f"{ML1M_MAP} does not start with the header ml100k_item, ml1m_movie.")
    rows = (line.split("\t") for line in lines[1:] if line)
    return {item: movie for item, movie, *_ in rows if movie}


def realign_link(
    items: Sequence[str], ml1m_of: dict[str, str], shipped: dict[str, str]
) -> tuple[dict[str, str], list[tuple[str, str]], dict]:
    """Read RecBole's ``ml-100k.link`` (keyed by ML-1M movie ids) through the ml-100k -> ML-1M map.

    ml-100k lists some films twice under two item ids, which then share one entity. RecBole's
    knowledge-aware datasets need a one-to-one link (``KnowledgeBasedDataset`` inverts it), so
    the link rows keep the first of such items in ``items`` order; the kg modality, which has no
    such constraint, gives every one of them the film's neighbourhood.

    Args:
        items: ml-100k item ids, in ``ml-100k.item`` order.
        ml1m_of: ml-100k item id -> ML-1M movie id (:func:`load_ml1m_map`).
        shipped: ML-1M movie id -> entity, the rows of the shipped ``ml-100k.link``.

    Returns:
        ``(links, rows, stats)``: item -> entity for every item whose film is linked, the
        one-to-one ``(item, entity)`` rows for the ``.link`` file, and counts for the manifest.
    """
    links = {i: shipped[ml1m_of[i]] for i in items if ml1m_of.get(i) in shipped}
    first: dict[str, str] = {}
    for item, entity in links.items():
        first.setdefault(entity, item)
    rows = [(item, entity) for item, entity in links.items() if first[entity] == item]
    used = {ml1m_of[i] for i in links}
    stats = {
        "shipped_link_rows": len(shipped),
        "items_with_ml1m_id": sum(i in ml1m_of for i in items),
        "items_linked": len(links),
        "link_rows": len(rows),
        "items_sharing_an_entity_left_out_of_link": {
            item: first[entity] for item, entity in links.items() if first[entity] != item
        },
        "shipped_link_rows_of_films_not_in_ml100k": sum(m not in used for m in shipped),
    }
    return links, rows, stats


def kg_features(
    items: Sequence[str],
    links: dict[str, str],
    triples: Sequence[tuple[str, str, str]],
    *,
    dim: int = KG_DIM,
) -> tuple[list[str], np.ndarray, dict]:
    """Dense knowledge-graph neighbourhood features of films.

    1. Inverse relations are merged: a relation ``s`` whose reversed triples are exactly those of
       another relation ``r`` (e.g. ``film.director.film`` and ``film.film.directed_by``) is
       dropped, keeping the alphabetically first of the pair, so no edge counts twice.
    2. A film's neighbourhood is the set of features ``(r, n)`` for each kept triple
       ``(film, r, n)`` and ``("~" + r, n)`` for each ``(n, r, film)``.
    3. Features held by fewer than two films are dropped: they add nothing to any similarity
       between two films and only shrink the film's other weights after normalisation. Films
       left with no feature get no row.
    4. ``X[i, j] = idf_j = ln(N / df_j)`` if film ``i`` has feature ``j`` (binary term frequency;
       ``N`` films with a feature, ``df_j`` of them holding ``j``), rows then L2-normalised.
    5. Rank-``dim`` truncated SVD ``X ~ U S V^T`` by :func:`truncated_svd_scores`; the features
       are ``U S``.

    Args:
        items: item tokens, in output order.
        links: item token -> entity id (several items may share an entity).
        triples: ``(head, relation, tail)`` entity triples (ml-100k.kg).
        dim: number of SVD components.

    Returns:
        ``(tokens, features, stats)``: tokens of the films with a row (in ``items`` order),
        float32 features, and counts for the log and the manifest.

    Shapes:
        features: ``[len(tokens), dim]``.
    """
    # 1. inverse pairs
    pairs: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for head, relation, tail in triples:
        pairs[relation].add((head, tail))
    dropped: dict[str, str] = {}
    for r in sorted(pairs):
        if r in dropped:
            continue
        for s in sorted(pairs):
            if s > r and s not in dropped and len(pairs[s]) == len(pairs[r]):
                if {(t, h) for h, t in pairs[s]} == pairs[r]:
                    dropped[s] = r
                    break

    # 2. neighbourhoods
    films_of: dict[str, list[str]] = defaultdict(list)
    for i in items:
        if i in links:
            films_of[links[i]].append(i)
    hood: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for head, relation, tail in triples:
        if relation in dropped:
            continue
        for film in films_of.get(head, ()):
            hood[film].add((relation, tail))
        for film in films_of.get(tail, ()):
            hood[film].add((INVERSE_PREFIX + relation, head))

    # 3. shared features only
    df = Counter(f for item in hood for f in hood[item])
    kept = sorted(f for f, count in df.items() if count >= KG_MIN_FILMS)
    column = {f: j for j, f in enumerate(kept)}
    rows_of = {i: sorted(column[f] for f in hood.get(i, ()) if f in column) for i in items}
    tokens = [i for i in items if rows_of[i]]
    n = len(tokens)

    # 4. TF-IDF, unit rows. A feature held by every film has idf 0; a film whose features all
    # are such has a zero row and is left out with the films without features.
    idf = np.array([math.log(n / df[f]) for f in kept], dtype=np.float64)
    weights = [idf[rows_of[i]] for i in tokens]
    norms = np.array([np.linalg.norm(w) for w in weights])
    keep = norms > 0
    tokens = [t for t, k in zip(tokens, keep) if k]
    indptr = np.cumsum([0] + [len(rows_of[t]) for t in tokens])
    indices = np.concatenate([rows_of[t] for t in tokens]) if tokens else np.zeros(0, int)
    data = np.concatenate([w / z for w, z, k in zip(weights, norms, keep) if k]) if tokens else []
    x = scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(tokens), len(kept)))

    # 5. SVD
    features = truncated_svd_scores(x, dim=dim)
    stats = {
        "items": len(items),
        "items_with_link": sum(i in links for i in items),
        "items_with_kg_features": len(tokens),
        "items_without_link": sum(i not in links for i in items),
        "items_linked_without_shared_neighbour": sum(i in links for i in items) - len(tokens),
        "triples": len(triples),
        "merged_inverse_relations": {s: r for s, r in sorted(dropped.items())},
        "features_total": len(df),
        "features_kept": len(kept),
    }
    return tokens, features, stats


def truncated_svd_scores(x, *, dim: int) -> np.ndarray:
    """Exact rank-``dim`` SVD scores ``U S`` of a (sparse) matrix, computed deterministically.

    The eigendecomposition ``X X^T = U S^2 U^T`` of the small ``[n, n]`` Gram matrix is taken in
    float64 on one thread (``torch.linalg.eigh``; one thread so that the result does not depend
    on the core count), the top ``dim`` eigenpairs give the columns ``u_k * s_k`` in decreasing
    ``s_k``, and each column's sign is fixed so that its largest-magnitude entry (the first one
    on ties) is positive. Columns beyond the rank of ``X`` are zero.

    Args:
        x: scipy sparse or dense ``[n, m]`` matrix.
        dim: number of components.

    Returns:
        float32 scores.

    Shapes:
        x: ``[n, m]`` -> ``[n, dim]``.
    """
    n = x.shape[0]
    out = np.zeros((n, dim), dtype=np.float32)
    if n == 0:
        return out
    gram = x @ x.T
    gram = gram.toarray() if hasattr(gram, "toarray") else np.asarray(gram)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values, vectors = torch.linalg.eigh(torch.from_numpy(np.asarray(gram, dtype=np.float64)))
    finally:
        torch.set_num_threads(threads)
    k = min(dim, n)
    values = values.flip(0)[:k].clamp(min=0)  # eigh sorts ascending
    vectors = vectors.flip(1)[:, :k]
    scores = vectors * values.sqrt()  # [n, k] = U S
    top = scores.abs().argmax(dim=0)  # first index of the largest magnitude per column
    signs = torch.sign(scores[top, torch.arange(k)])
    scores = scores * torch.where(signs == 0, torch.ones_like(signs), signs)
    out[:, :k] = scores.numpy().astype(np.float32)
    return out


def _build_ml_100k_mm(
    folder: Path, *, show_progress: bool = True, max_items: int | None = None
) -> dict:
    """Write every ml-100k-mm file into ``folder``; return the manifest summary.

    ``max_items`` limits the text modality to the first items (a test knob: the rest of the
    build is unchanged and complete).
    """
    name, source = "ml-100k-mm", recbole_example_folder("ml-100k")
    steps = tqdm(total=3, desc=f"Building {name}", unit="step", disable=not show_progress)

    header, rows = _read_atomic(source / "ml-100k.item")
    col = {field: j for j, field in enumerate(header)}
    items = [r[col["item_id"]] for r in rows]

    steps.set_postfix_str("atomic files")
    for suffix in ATOMIC_SUFFIXES:
        if suffix != "link":
            shutil.copyfile(source / f"ml-100k.{suffix}", folder / f"{name}.{suffix}")
    link_text = (source / "ml-100k.link").read_text(encoding="utf-8").splitlines()
    shipped = dict(line.split("\t") for line in link_text[1:] if line)
    links, link_rows, link_stats = realign_link(items, load_ml1m_map(), shipped)
    (folder / f"{name}.link").write_text(
        "\n".join([link_text[0], *("\t".join(r) for r in link_rows)]) + "\n", encoding="utf-8"
    )
    steps.update()

    steps.set_postfix_str(f"text: {DEFAULT_TEXT_MODEL}")
    text_rows = rows[:max_items] if max_items is not None else rows
    sentences = [
        film_sentence(r[col["movie_title"]], r[col["release_year"]], r[col["class"]].split())
        for r in text_rows
    ]
    text = encode_texts(sentences, show_progress=show_progress)
    save_modality(folder, name, "text", tokens=items[: len(sentences)], features=text)
    steps.update()

    steps.set_postfix_str("kg: TF-IDF + SVD")
    _, kg_rows = _read_atomic(source / "ml-100k.kg")
    kg_tokens, kg, stats = kg_features(items, links, [tuple(r) for r in kg_rows], dim=KG_DIM)
    save_modality(folder, name, "kg", tokens=kg_tokens, features=kg)
    steps.update()
    steps.close()

    inter_header, inter_rows = _read_atomic(source / "ml-100k.inter")
    users = {r[inter_header.index("user_id")] for r in inter_rows}
    missing = stats["items"] - stats["items_with_kg_features"]
    logger.info(
        "%s: %d of %d items have no kg features (%d without a Freebase link, %d linked but sharing "
        "no neighbour with another film); they have no row in %s.kg.npy and the dataset's "
        "missing_feature_policy fills them.",
        name,
        missing,
        stats["items"],
        stats["items_without_link"],
        stats["items_linked_without_shared_neighbour"],
        name,
    )
    return {
        "source": str(source),
        "counts": {"users": len(users), "items": len(items), "interactions": len(inter_rows)},
        "text": {
            "model": DEFAULT_TEXT_MODEL,
            "template": TEXT_TEMPLATE,
            "dim": int(text.shape[1]),
            "rows": len(sentences),
        },
        "link": {"map": ML1M_MAP, **link_stats},
        "kg": {"dim": KG_DIM, "min_films_per_feature": KG_MIN_FILMS, **stats},
    }


EMBEDDED_DATASETS: dict[str, EmbeddedDataset] = {
    "ml-100k-mm": EmbeddedDataset(
        name="ml-100k-mm",
        source="ml-100k",
        modalities=("text", "kg"),
        description="text: all-MiniLM-L6-v2, 384-d; kg: TF-IDF of 1-hop neighbours + SVD, 64-d",
        build=_build_ml_100k_mm,
    ),
}
