"""The embedded dataset ml-100k-mm: one full build, a cheap rebuild, and the kg method's parts."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest

from recbole_mm.data import embedded
from recbole_mm.data.embedded import (
    EMBEDDED_DATASETS,
    default_cache_dir,
    ensure_embedded_dataset,
    film_sentence,
    is_embedded,
    kg_features,
    load_ml1m_map,
    realign_link,
    truncated_svd_scores,
)
from recbole_mm.data.features import ModalitySpec, load_modality

NAME = "ml-100k-mm"
SOURCE = embedded.recbole_example_folder("ml-100k")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The full build, through the public entry point and the default cache location."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECBOLE_MM_CACHE", str(cache))
        folder = ensure_embedded_dataset(NAME, show_progress=False)
    assert folder == cache / "datasets" / NAME
    return folder


def _modality(folder: Path, name: str, dim: int) -> tuple[list[str], np.ndarray]:
    spec = ModalitySpec.from_config(name, {"dim": dim}, folder=folder, dataset=NAME)
    return load_modality(spec)


def _column(path: Path, field: str) -> list[str]:
    header, rows = embedded._read_atomic(path)
    return [r[header.index(field)] for r in rows]


# ---------------------------------------------------------------------------------------------
# the public API


def test_registry_and_cache_dir(monkeypatch, tmp_path):
    assert is_embedded(NAME) and not is_embedded("ml-100k") and NAME in EMBEDDED_DATASETS
    monkeypatch.setenv("RECBOLE_MM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RECBOLE_MM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "recbole_mm"
    with pytest.raises(ValueError, match="not an embedded dataset"):
        ensure_embedded_dataset("ml-100k")


def test_full_build_files_and_counts(built):
    assert sorted(p.name for p in built.iterdir()) == sorted(EMBEDDED_DATASETS[NAME].files())
    for suffix in ("inter", "item", "user", "kg"):
        shipped = (SOURCE / f"ml-100k.{suffix}").read_bytes()
        assert (built / f"{NAME}.{suffix}").read_bytes() == shipped, suffix
    manifest = json.loads((built / f"{NAME}.build.json").read_text())
    assert manifest["counts"] == {"users": 943, "items": 1682, "interactions": 100000}
    assert manifest["link"]["items_with_ml1m_id"] == 1668
    assert manifest["link"]["items_linked"] == 1536 and manifest["link"]["link_rows"] == 1519
    assert manifest["kg"]["items_without_link"] == 1682 - 1536
    assert manifest["text"]["template"] == embedded.TEXT_TEMPLATE


def test_full_build_link_is_realigned(built):
    """The link is keyed by ml-100k item ids, one row per entity, read through the shipped map."""
    header, rows = embedded._read_atomic(built / f"{NAME}.link")
    assert (built / f"{NAME}.link").read_text().splitlines()[0] == "item_id:token\tentity_id:token"
    link = dict(rows)
    assert len(link) == len(rows) == len(set(link.values())) == 1519  # one-to-one, as RecBole needs
    shipped = dict(zip(*_link_columns()))  # keyed by ML-1M movie ids
    ml1m_of = load_ml1m_map()
    assert all(shipped[ml1m_of[item]] == entity for item, entity in link.items())
    assert "313" not in link  # Titanic is ML-1M 1721, beyond the ids the shipped link covers
    assert link["50"] == shipped["260"] and link["181"] == shipped["1210"]  # Star Wars IV, VI
    # Chasing Amy is ml-100k item 246 and again 268: the first keeps the link row.
    assert link["246"] == shipped["1639"] and "268" not in link


def test_full_build_sequels_and_directors(built):
    """Through the new link the knowledge graph says what is known of the films; through the
    shipped link, read by ml-100k ids, it did not."""
    _, triples = embedded._read_atomic(SOURCE / "ml-100k.kg")
    sequel = {(h, t) for h, r, t in triples if r == "film.film.sequel"}
    directors: dict[str, set[str]] = {}
    for h, r, t in triples:
        if r == "film.film.directed_by":
            directors.setdefault(h, set()).add(t)
    new = dict(embedded._read_atomic(built / f"{NAME}.link")[1])
    old = dict(zip(*_link_columns()))
    # Star Wars (50) -> The Empire Strikes Back (172) -> Return of the Jedi (181)
    for link, expected in ((new, True), (old, False)):
        assert ((link["50"], link["172"]) in sequel) is expected
        assert ((link["172"], link["181"]) in sequel) is expected
    films_by = {  # ml-100k items by one director each
        "Spielberg": ["82", "318", "174", "234", "423", "210"],
        "Hitchcock": ["479", "603", "480", "185", "443"],
        "Kubrick": ["135", "474", "179", "188", "200"],
        "Cameron": ["176", "195", "96", "385", "164"],
        "Burton": ["403", "231", "47", "235"],
    }
    for who, films in films_by.items():
        assert set.intersection(*(directors[new[f]] for f in films)), who
        assert not set.intersection(*(directors.get(old[f], set()) for f in films)), who


def test_full_build_text_modality(built):
    tokens, text = _modality(built, "text", 384)
    assert tokens == _column(SOURCE / "ml-100k.item", "item_id")
    assert text.shape == (1682, 384) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    row = {t: i for i, t in enumerate(tokens)}
    # Star Wars (50) and Return of the Jedi (181) are closer than Star Wars and Sense and
    # Sensibility (17): the rows are the films they claim to be.
    assert text[row["50"]] @ text[row["181"]] > text[row["50"]] @ text[row["17"]]


def test_full_build_kg_modality(built):
    tokens, kg = _modality(built, "kg", 64)
    manifest = json.loads((built / f"{NAME}.build.json").read_text())["kg"]
    items = _column(SOURCE / "ml-100k.item", "item_id")
    shipped = dict(zip(*_link_columns()))
    linked = {i for i, m in load_ml1m_map().items() if m in shipped}
    assert kg.shape == (len(tokens), 64) and kg.dtype == np.float32
    assert set(tokens) <= linked  # no film without a link has a row
    assert len(tokens) == manifest["items_with_kg_features"] == 1536
    assert tokens == [i for i in items if i in set(tokens)]  # item-file order
    assert np.linalg.norm(kg, axis=1).min() > 0
    # Components come in decreasing energy, with the sign convention applied.
    energy = (kg.astype(np.float64) ** 2).sum(axis=0)
    assert np.all(np.diff(energy) <= 1e-6)
    assert np.all(kg[np.abs(kg).argmax(axis=0), np.arange(64)] > 0)


def test_kg_vectors_follow_the_graph(built):
    """Films joined by a sequel triple are far closer than the average pair of films."""
    tokens, kg = _modality(built, "kg", 64)
    row = {t: i for i, t in enumerate(tokens)}
    item_of = {e: i for i, e in embedded._read_atomic(built / f"{NAME}.link")[1]}
    _, triples = embedded._read_atomic(SOURCE / "ml-100k.kg")
    pairs = [
        (row[item_of[h]], row[item_of[t]])
        for h, r, t in triples
        if r == "film.film.sequel" and item_of.get(h) in row and item_of.get(t) in row
    ]
    assert len(pairs) > 20
    unit = kg / np.linalg.norm(kg, axis=1, keepdims=True)
    sequel = np.mean([unit[a] @ unit[b] for a, b in pairs])
    assert sequel > (unit @ unit.T).mean() + 0.2


def test_kg_neighbours_share_the_films_genres(built):
    """The kg vector describes the film itself: a film's nearest kg neighbour shares its
    (ml-100k) genres far more than a random film does. Through the shipped link read by ml-100k
    ids both were 0.17."""
    tokens, kg = _modality(built, "kg", 64)
    header, rows = embedded._read_atomic(SOURCE / "ml-100k.item")
    genres = {r[0]: set(r[header.index("class")].split()) for r in rows}
    unit = kg / np.linalg.norm(kg, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)

    def jaccard(a: str, b: str) -> float:
        return len(genres[a] & genres[b]) / len(genres[a] | genres[b])

    nearest = np.mean([jaccard(t, tokens[j]) for t, j in zip(tokens, sim.argmax(axis=1))])
    shuffled = np.random.default_rng(0).permutation(len(tokens))
    random = np.mean([jaccard(t, tokens[j]) for t, j in zip(tokens, shuffled)])
    assert nearest > 0.45 and random < 0.25


def _link_columns() -> tuple[list[str], list[str]]:
    path = SOURCE / "ml-100k.link"
    return _column(path, "item_id"), _column(path, "entity_id")


def test_existing_build_is_reused(built):
    before = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    assert ensure_embedded_dataset(NAME, built, show_progress=False) == built
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# rebuilds and failures


def test_rebuild_is_byte_identical(tmp_path):
    # The kg part and the copies are built in full; the text part over the first 40 films.
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        embedded._build_ml_100k_mm(folder, show_progress=False, max_items=40)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and len(names) == 9
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    tokens, text = _modality(first, "text", 384)
    assert len(tokens) == 40 and text.shape == (40, 384)


def test_failed_build_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("RECBOLE_MM_CACHE", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(embedded, "encode_texts", broken)
    with pytest.raises(RuntimeError, match="encoder failed"):
        ensure_embedded_dataset(NAME, show_progress=False)
    assert list((tmp_path / "datasets").iterdir()) == []


def test_incomplete_folder_is_refused_not_reused(tmp_path, built):
    folder = tmp_path / NAME
    folder.mkdir()
    (folder / f"{NAME}.inter").write_bytes((built / f"{NAME}.inter").read_bytes())
    with pytest.raises(FileExistsError, match="not a complete build") as error:
        ensure_embedded_dataset(NAME, folder, show_progress=False)
    assert f"{NAME}.build.json is missing" in str(error.value)
    assert f"{NAME}.kg.npy is missing" in str(error.value)
    assert f"rm -r '{folder}'" in str(error.value)
    assert [p.name for p in folder.iterdir()] == [f"{NAME}.inter"]


@pytest.fixture
def small_build(monkeypatch) -> None:
    """Rebuilds through the public entry point encode 40 sentences, not 1,682."""
    spec = dataclasses.replace(
        EMBEDDED_DATASETS[NAME],
        build=functools.partial(embedded._build_ml_100k_mm, max_items=40),
    )
    monkeypatch.setitem(EMBEDDED_DATASETS, NAME, spec)


def _copy(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / NAME))


def test_manifest_records_every_file(built):
    files = json.loads((built / f"{NAME}.build.json").read_text())["files"]
    assert sorted(files) == sorted(f for f in EMBEDDED_DATASETS[NAME].files() if "build" not in f)
    for name, record in files.items():
        data = (built / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert embedded.build_problems(built, EMBEDDED_DATASETS[NAME]) == (ANY, [])


def test_truncated_file_is_rebuilt(tmp_path, built, small_build, caplog):
    folder = _copy(built, tmp_path)
    kg = folder / f"{NAME}.kg.npy"
    size = kg.stat().st_size
    kg.write_bytes(kg.read_bytes()[: size // 2])
    with caplog.at_level(logging.WARNING, logger="recbole_mm"):
        assert ensure_embedded_dataset(NAME, folder, show_progress=False) == folder
    assert f"{NAME}.kg.npy has {size // 2} bytes, the build wrote {size}" in caplog.text
    assert "rebuilding it" in caplog.text
    assert kg.stat().st_size == size
    assert embedded.build_problems(folder, EMBEDDED_DATASETS[NAME])[1] == []
    assert len(_modality(folder, "text", 384)[0]) == 40  # the new (small) build, swapped in
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # nothing left beside it


def test_changed_or_missing_file_is_detected(tmp_path, built):
    folder = _copy(built, tmp_path)
    spec = EMBEDDED_DATASETS[NAME]
    inter = folder / f"{NAME}.inter"
    data = bytearray(inter.read_bytes())
    data[100] ^= 1  # same size, one bit changed
    inter.write_bytes(bytes(data))
    (folder / f"{NAME}.text.tokens").unlink()
    manifest, problems = embedded.build_problems(folder, spec)
    assert manifest["dataset"] == NAME
    assert problems == [
        f"{NAME}.inter differs from what the build wrote (SHA-256)",
        f"{NAME}.text.tokens is missing",
    ]


def test_unreadable_manifest_is_refused(tmp_path, built):
    folder = _copy(built, tmp_path)
    manifest = folder / f"{NAME}.build.json"
    manifest.write_text(
        manifest.read_text()[:50]
    )  # truncated JSON: the folder is not provably ours
    with pytest.raises(FileExistsError, match=f"{NAME}.build.json is unreadable or not ours"):
        ensure_embedded_dataset(NAME, folder, show_progress=False)
    assert manifest.read_text() and (folder / f"{NAME}.kg.npy").is_file()  # untouched


def test_older_build_format_is_rebuilt(tmp_path, built, small_build, monkeypatch, caplog):
    folder = _copy(built, tmp_path)
    monkeypatch.setattr(embedded, "BUILD_FORMAT", embedded.BUILD_FORMAT + 1)
    with caplog.at_level(logging.WARNING, logger="recbole_mm"):
        ensure_embedded_dataset(NAME, folder, show_progress=False)
    assert "this version reads format" in caplog.text
    manifest = json.loads((folder / f"{NAME}.build.json").read_text())
    assert manifest["format"] == embedded.BUILD_FORMAT


def test_newer_build_format_is_refused(built, monkeypatch):
    monkeypatch.setattr(embedded, "BUILD_FORMAT", embedded.BUILD_FORMAT - 1)
    with pytest.raises(FileExistsError, match="this version reads format"):
        ensure_embedded_dataset(NAME, built, show_progress=False)


# ---------------------------------------------------------------------------------------------
# the text template


@pytest.mark.parametrize(
    ("title", "year", "genres", "sentence"),
    [
        (
            "Toy Story",
            "1995",
            ["Animation", "Children's", "Comedy"],
            "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        ),
        ("Usual Suspects, The", "1995", ["Crime"], "The Usual Suspects (1995). Genres: Crime."),
        (
            "Big Blue, The (Grand bleu, Le)",
            "1988",
            ["Adventure", "Romance"],
            "The Big Blue (Le Grand bleu) (1988). Genres: Adventure, Romance.",
        ),
        (
            "Star Maker, The (Uomo delle stelle, L')",
            "1995",
            ["Drama"],
            "The Star Maker (L'Uomo delle stelle) (1995). Genres: Drama.",
        ),
        ("Good Morning", "1971", ["unknown"], "Good Morning (1971)."),
        ("unkonwn", "unkonwn", ["unknown"], "Unknown film."),
        ("Corrina, Corrina", "1994", ["Comedy"], "Corrina, Corrina (1994). Genres: Comedy."),
    ],
)
def test_film_sentence(title, year, genres, sentence):
    assert film_sentence(title, year, genres) == sentence


# ---------------------------------------------------------------------------------------------
# the kg method on small inputs


def test_truncated_svd_scores_match_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.random((12, 30)) * (rng.random((12, 30)) < 0.3)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    expected = u[:, :5] * s[:5]
    got = truncated_svd_scores(x, dim=5)
    signs = np.sign(expected[np.abs(expected).argmax(axis=0), np.arange(5)])
    np.testing.assert_allclose(got, expected * signs, atol=1e-5)
    # More components than the rank: the rest are zero columns.
    wide = truncated_svd_scores(x[:3], dim=5)
    assert wide.shape == (3, 5) and not wide[:, 3:].any()


def test_kg_features_neighbourhoods():
    items = ["1", "2", "3", "4", "5"]
    links = {"1": "f1", "2": "f2", "3": "f3", "4": "f4"}  # item 5 has no link
    triples = [
        ("f1", "film.genre", "drama"),
        ("f2", "film.genre", "drama"),
        ("drama", "genre.films", "f1"),  # genre.films is the exact inverse of film.genre
        ("drama", "genre.films", "f2"),
        ("comedy", "genre.films", "f3"),
        ("comedy", "genre.films", "f4"),
        ("f3", "film.genre", "comedy"),
        ("f4", "film.genre", "comedy"),
        ("director_x", "director.film", "f1"),
        ("director_x", "director.film", "f3"),
        ("f4", "film.actor", "only_in_f4"),  # held by one film: dropped
        ("f9", "film.actor", "someone"),  # not a film of ours: ignored
    ]
    tokens, features, stats = kg_features(items, links, triples, dim=3)
    assert tokens == ["1", "2", "3", "4"] and features.shape == (4, 3)
    assert stats["merged_inverse_relations"] == {"genre.films": "film.genre"}
    assert stats["features_total"] == 4 and stats["features_kept"] == 3
    assert stats["items_without_link"] == 1
    # Without the dropped feature, item 4 has exactly item 3's comedy feature.
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert unit[3] @ unit[2] > unit[3] @ unit[0]

    # Two items of one film (one entity) get the same row; the other films are unchanged.
    twice, twice_features, _ = kg_features(items + ["6"], {**links, "6": "f4"}, triples, dim=3)
    assert twice == ["1", "2", "3", "4", "6"]
    np.testing.assert_array_equal(twice_features[4], twice_features[3])

    # A film whose only feature is its own gets no row.
    tokens, _, stats = kg_features(["1", "2", "3"], links, [("f3", "film.actor", "a")], dim=2)
    assert tokens == [] and stats["items_linked_without_shared_neighbour"] == 3


def test_realign_link():
    items = ["1", "2", "3", "4", "5"]
    ml1m_of = {"1": "10", "2": "20", "3": "10", "4": "40"}  # 3 is 1 again; 5 is unmatched
    shipped = {"10": "e10", "20": "e20", "30": "e30"}  # 40 has no entity; 30 is not in ml-100k
    links, rows, stats = realign_link(items, ml1m_of, shipped)
    assert links == {"1": "e10", "2": "e20", "3": "e10"}
    assert rows == [("1", "e10"), ("2", "e20")]
    assert stats == {
        "shipped_link_rows": 3,
        "items_with_ml1m_id": 4,
        "items_linked": 3,
        "link_rows": 2,
        "items_sharing_an_entity_left_out_of_link": {"3": "1"},
        "shipped_link_rows_of_films_not_in_ml100k": 1,
    }
