"""dataset_tools.movielens_link: matching ml-100k films to MovieLens-1M ids, and the shipped map."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tools_fixtures import REPO

from dataset_tools.common import ConversionError
from dataset_tools.movielens_link import (
    MATCH_KINDS,
    Film,
    Match,
    match_films,
    read_map,
    read_ml1m_movies,
    read_ml100k_items,
    title_keys,
    write_map,
)

SHIPPED_MAP = REPO / "recbole_mm" / "data" / "ml-100k-to-ml-1m.tsv"
# MovieLens 1M is not shipped with the project; the check against it runs where it is present.
# Development data lives in ../shared beside the checkout (users do not have it).
ML1M_MOVIES = Path(
    os.environ.get(
        "RECBOLE_MM_ML1M_MOVIES", REPO.parent / "shared" / "data" / "movielens-1m" / "movies.dat"
    )
)

ML1M = [
    Film("1", "Toy Story", "1995"),
    Film("50", "Usual Suspects, The", "1995"),
    Film("260", "Star Wars: Episode IV - A New Hope", "1977"),
    Film("1196", "Star Wars: Episode V - The Empire Strikes Back", "1980"),
    Film("1233", "Boat, The (Das Boot)", "1981"),
    Film("1130", "Howling, The", "1980"),
    Film("1406", "C\ufffdr\ufffdmonie, La", "1995"),  # a latin-1 file read as UTF-8
    Film("2952", "Hard 8 (a.k.a. Sydney, a.k.a. Hard Eight)", "1996"),
    Film("10", "Twins", "1988"),
    Film("11", "Twins (Sisters)", "1988"),
]


def test_match_rules_on_small_inputs():
    ml100k = [
        Film("1", "Toy Story", "1995"),  # exact
        Film("2", "The Usual Suspects", "1995"),  # article moved
        Film("3", "Star Wars", "1977"),  # the part before the colon
        Film("4", "Empire Strikes Back, The", "1980"),  # the part after " - "
        Film("5", "Boot, Das", "1981"),  # the alternative title, its article moved
        Film("6", "Howling, The", "1981"),  # one year off
        Film("7", "Cérémonie, La", "1995"),  # accents against replacement characters
        Film("8", "Hard Eight", "1996"),  # second of two a.k.a. titles
        Film("9", "Toy Story", "1999"),  # wrong year: unmatched
        Film("10", "Twins", "1988"),  # exact, though "Twins (Sisters)" shares the key
        Film("11", "Sisters", "1988"),  # the alternative title of one film only
        Film("12", "Unknown Film", "1990"),
        Film("13", "Usual Suspects, The", "1995"),  # the same film under a second id
    ]
    got = {m.ml100k_item: (m.ml1m_movie, m.kind) for m in match_films(ml100k, ML1M)}
    assert got == {
        "1": ("1", "exact"),
        "2": ("50", "normalised"),
        "3": ("260", "part"),
        "4": ("1196", "part"),
        "5": ("1233", "normalised"),
        "6": ("1130", "year+-1"),
        "7": ("1406", "normalised"),
        "8": ("2952", "normalised"),
        "9": (None, "unmatched"),
        "10": ("10", "exact"),
        "11": ("11", "normalised"),
        "12": (None, "unmatched"),
        "13": ("50", "exact"),
    }


def test_ambiguous_candidates_are_not_guessed():
    ml1m = [Film("1", "Twins", "1988"), Film("2", "Twins, The", "1988")]
    assert match_films([Film("9", "Twins!", "1988")], ml1m) == [Match("9", None, "unmatched")]


def test_title_keys():
    assert title_keys("Double vie de Véronique, La (Double Life of Veronique, The)") == {
        "double vie de veronique",
        "double vie de vronique",
        "double life of veronique",
    }
    assert title_keys("Oscar & Lucinda") == {"oscar and lucinda"}
    assert title_keys("Star Maker, The (Uomo delle stelle, L')") == {
        "star maker",
        "uomo delle stelle",
    }


def test_readers(tmp_path):
    movies = tmp_path / "movies.dat"
    movies.write_bytes(
        "1406::Cérémonie, La (1995)::Drama\n1::Toy Story (1995)::Comedy\n".encode("latin-1")
    )
    assert read_ml1m_movies(movies) == [
        Film("1406", "Cérémonie, La", "1995"),
        Film("1", "Toy Story", "1995"),
    ]
    movies.write_text("1::Toy Story::Comedy\n")
    with pytest.raises(ConversionError, match="line 1: expected 'MovieID::Title"):
        read_ml1m_movies(movies)
    with pytest.raises(ConversionError, match="does not exist"):
        read_ml1m_movies(tmp_path / "absent.dat")

    items = tmp_path / "ml-100k.item"
    items.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation\n"
        "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation\n"
        "267\tunkonwn\tunkonwn\tunknown\n"
    )
    assert read_ml100k_items(items) == [
        Film("1", "Toy Story", "1995"),
        Film("1412", "Land Before Time III: The Time of the Great Giving", "1995"),
        Film("267", "unkonwn", "unkonwn"),
    ]


def test_map_round_trip(tmp_path):
    matches = [Match("1", "1", "exact"), Match("2", None, "unmatched")]
    path = write_map(matches, tmp_path / "map.tsv")
    assert path.read_text() == "ml100k_item\tml1m_movie\tmatch_kind\n1\t1\texact\n2\t\tunmatched\n"
    assert read_map(path) == matches


def test_shipped_map():
    matches = read_map(SHIPPED_MAP)
    assert [m.ml100k_item for m in matches] == [str(i) for i in range(1, 1683)]
    by_item = {m.ml100k_item: m for m in matches}
    assert by_item["313"] == Match("313", "1721", "exact")  # Titanic (1997)
    assert [by_item[i].ml1m_movie for i in ("50", "172", "181")] == ["260", "1196", "1210"]
    assert by_item["267"].kind == "unmatched"  # the film without a title
    assert {m.kind for m in matches} <= set(MATCH_KINDS)
    assert all((m.ml1m_movie is None) == (m.kind == "unmatched") for m in matches)
    assert sum(m.kind == "unmatched" for m in matches) < 20


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "dataset_tools.movielens_link", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not ML1M_MOVIES.is_file(), reason=f"{ML1M_MOVIES} is not available")
def test_shipped_map_is_what_the_command_writes(tmp_path):
    result = run("--ml1m-movies", str(ML1M_MOVIES), "--out", str(tmp_path / "map.tsv"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "map.tsv").read_bytes() == SHIPPED_MAP.read_bytes()
    assert "1682 ml-100k items: exact 1617, normalised 44, part 5, year+-1 2, unmatched 14" in (
        result.stderr
    )


def test_cli_help_and_missing_input(tmp_path):
    result = run("--help")
    assert (
        result.returncode == 0 and "usage: python -m dataset_tools.movielens_link" in result.stdout
    )
    result = run("--ml1m-movies", str(tmp_path / "movies.dat"), "--out", str(tmp_path / "m.tsv"))
    assert result.returncode == 2
    assert f"{tmp_path / 'movies.dat'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.tsv").exists()
