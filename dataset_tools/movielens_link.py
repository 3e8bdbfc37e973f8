"""Map MovieLens-100K item ids to MovieLens-1M movie ids by title and year.

RecBole's ``ml-100k.link`` (item -> Freebase entity, from KB4Rec) is keyed by MovieLens' global
movie ids, the numbering of ML-1M / ML-20M, not by ml-100k's own item ids: ml-100k item 313 is
*Titanic* (1997), ML-1M movie 313 is *The Swan Princess* (1994) and *Titanic* is ML-1M 1721. This
tool matches each ml-100k film to its ML-1M id so that the link can be read through the map
(``recbole_mm/data/embedded.py`` does so when it builds ``ml-100k-mm``).

Each ml-100k film gets the first of these rules that gives it exactly one ML-1M film:

1. ``exact``: the same title and year (ML-1M's ``Title (Year)`` split into the two).
2. ``normalised``: the same year and a common *title key*. A title's keys are its main title and
   each alternative title in parentheses (``Seven (Se7en)`` gives ``seven`` and ``se7en``), each
   made comparable: a trailing article moved to the front (``Usual Suspects, The`` ->
   ``The Usual Suspects``), then accents removed, lower case, ``&`` read as ``and``, every
   other non-alphanumeric character a space, and a leading article dropped.
3. ``part``: the same year and a key of the ml-100k title equal to a key of one part of the ML-1M
   title, the parts being the text before the first ``:`` and after the last `` - ``
   (``Star Wars`` and ``A New Hope`` for ``Star Wars: Episode IV - A New Hope``).
4. ``year+-1``: as 2, with the year one off (a film dated by its festival or its release).

A rule that finds several candidates leaves the film to the next rule; a film that no rule
matches is ``unmatched``. Several ml-100k items may map to one ML-1M film: ml-100k lists some
films twice under two ids.

The map is a tab-separated file with the columns ``ml100k_item``, ``ml1m_movie`` (empty when
unmatched) and ``match_kind``, one row per ml-100k item in ``ml-100k.item`` order; the report is
printed (and written with ``--report``). Usage::

    python -m dataset_tools.movielens_link --ml1m-movies ml-1m/movies.dat \\
        --out recbole_mm/data/ml-100k-to-ml-1m.tsv

``--ml100k-items`` defaults to the ``ml-100k.item`` shipped inside the installed ``recbole``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from dataset_tools.common import ConversionError, require_file, run_cli

logger = logging.getLogger("dataset_tools")

MATCH_KINDS = ("exact", "normalised", "part", "year+-1", "unmatched")
MAP_HEADER = ("ml100k_item", "ml1m_movie", "match_kind")

_ARTICLES = ("the", "a", "an", "la", "le", "les", "l'", "il", "der", "die", "das", "det", "el")
_TRAILING_ARTICLE = re.compile(r"^(?P<body>.+), (?P<article>[A-Za-z]+'?)$")
_ML1M_TITLE = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)$")
_YEAR_IN_TITLE = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)(?:\s*\([^()]*\))?$")


@dataclasses.dataclass(frozen=True)
class Film:
    """A film of one MovieLens release: its id there, title (without the year) and year."""

    id: str
    title: str
    year: str


@dataclasses.dataclass(frozen=True)
class Match:
    """Where an ml-100k item went: its ML-1M movie id (``None`` if unmatched) and the rule."""

    ml100k_item: str
    ml1m_movie: str | None
    kind: str


# ---------------------------------------------------------------------------------------------
# Reading


def _read_text(path: Path) -> str:
    """UTF-8 if the bytes decode as such, else latin-1 (the encoding GroupLens published in)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_ml1m_movies(path: str | Path) -> list[Film]:
    """Read ML-1M's ``movies.dat`` (``MovieID::Title (Year)::Genres``) in file order."""
    path = require_file(
        path,
        what="ML-1M movie list",
        fix="Pass --ml1m-movies with the movies.dat of MovieLens 1M "
        "(https://grouplens.org/datasets/movielens/1m/).",
    )
    films = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::")
        match = _ML1M_TITLE.match(parts[1].strip()) if len(parts) == 3 else None
        if match is None or not parts[0].isdigit():
            raise ConversionError(
                f"{path}, line {number}: expected 'MovieID::Title (Year)::Genres', got {line!r}."
            )
        films.append(Film(parts[0], match["title"], match["year"]))
    return films


def default_ml100k_items() -> Path:
    """``ml-100k.item`` inside the installed ``recbole`` package (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError("recbole is not installed; pass --ml100k-items.")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "dataset_example" / "ml-100k" / "ml-100k.item"


def read_ml100k_items(path: str | Path) -> list[Film]:
    """Read RecBole's ``ml-100k.item`` (``item_id``, ``movie_title``, ``release_year``, ...).

    One film reads ``Land Before Time III: The Time of the Great Giving (1995)`` with the year
    ``V`` (the original title ended in ``(1995) (V)``): a year that is not four digits is taken
    from the title when the title ends in ``(YYYY)``, optionally followed by one more
    parenthesised note.
    """
    path = require_file(
        path, what="ml-100k item file", fix="Pass --ml100k-items with RecBole's ml-100k.item."
    )
    lines = _read_text(path).splitlines()
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    try:
        col = [header.index(f) for f in ("item_id", "movie_title", "release_year")]
    except ValueError:
        raise ConversionError(
            f"{path} must have the columns item_id, movie_title and release_year; it has {header}."
        ) from None
    films = []
    for line in lines[1:]:
        if not line:
            continue
        item, title, year = (line.split("\t")[j].strip() for j in col)
        if not re.fullmatch(r"\d{4}", year):
            found = _YEAR_IN_TITLE.match(title)
            if found:
                title, year = found["title"], found["year"]
        films.append(Film(item, title, year))
    return films


# ---------------------------------------------------------------------------------------------
# Matching


def _front_article(part: str) -> str:
    match = _TRAILING_ARTICLE.match(part.strip())
    if match and match["article"].lower() in _ARTICLES:
        article = match["article"]
        return article + match["body"] if article.endswith("'") else f"{article} {match['body']}"
    return part.strip()


def _key(text: str, *, drop_non_ascii: bool = False) -> str:
    """Accents off (or, with ``drop_non_ascii``, every non-ASCII character dropped), lower case,
    ``&`` as ``and``, punctuation as space, a leading article off."""
    text = _front_article(text)
    if drop_non_ascii:
        text = "".join(c for c in unicodedata.normalize("NFC", text) if c.isascii())
    else:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"^l'", "", text.lower())  # "L'Uomo" -> "uomo": the elided article
    words = re.sub(r"[^0-9a-z]+", " ", text.replace("&", " and ")).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def _keys(name: str) -> set[str]:
    # Both forms, so that a title whose accented letters were replaced by U+FFFD (a latin-1
    # movies.dat read as UTF-8) still meets the same title spelt with or without accents.
    return {k for k in (_key(name), _key(name, drop_non_ascii=True)) if k}


def _names(title: str) -> list[str]:
    """The main title and each alternative title in parentheses, ``a.k.a.`` lists split."""
    names = [re.sub(r"\s*\([^()]*\)", "", title)]
    for alternative in re.findall(r"\(([^()]*)\)", title):
        names += re.split(r"(?:^|,)\s*a\.k\.a\.\s*", alternative, flags=re.IGNORECASE)
    return [n.strip() for n in names if n.strip()]


def title_keys(title: str) -> set[str]:
    """Comparable forms of a MovieLens title: its main title and each parenthesised one.

    Example: ``title_keys("Double vie de Véronique, La (Double Life of Veronique, The)")`` is
    ``{"double vie de veronique", "double vie de vronique", "double life of veronique"}``.
    """
    return set().union(*(_keys(n) for n in _names(title)))


def title_parts(title: str) -> set[str]:
    """Keys of the parts of titles with a subtitle: before the first ``:`` and after the last
    ``:`` or `` - `` (``Star Wars: Episode IV - A New Hope``: ``star wars``, ``new hope``)."""
    parts = set()
    for name in _names(title):
        if ":" in name:
            parts |= _keys(name.split(":", 1)[0]) | _keys(name.rsplit(":", 1)[1])
        if " - " in name:
            parts |= _keys(name.split(" - ", 1)[0]) | _keys(name.rsplit(" - ", 1)[1])
    return parts - title_keys(title)


def match_films(ml100k: Sequence[Film], ml1m: Sequence[Film]) -> list[Match]:
    """Match each ml-100k film to at most one ML-1M film (rules in the module docstring).

    Args:
        ml100k: the films of ``ml-100k.item``.
        ml1m: the films of ML-1M's ``movies.dat``.

    Returns:
        one :class:`Match` per ml-100k film, in input order.
    """
    exact: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_part: dict[tuple[str, str], set[str]] = defaultdict(set)
    for film in ml1m:
        exact[film.title, film.year].add(film.id)
        for key in title_keys(film.title):
            by_key[key, film.year].add(film.id)
        for part in title_keys(film.title) | title_parts(film.title):
            by_part[part, film.year].add(film.id)

    def near_years(year: str) -> list[str]:
        return [str(int(year) + d) for d in (-1, 1)] if year.isdigit() else []

    matches = []
    for film in ml100k:
        keys = title_keys(film.title)
        pieces = keys | title_parts(film.title)
        rules = [
            ("exact", exact.get((film.title, film.year), set())),
            ("normalised", set().union(*(by_key.get((k, film.year), set()) for k in keys))),
            ("part", set().union(*(by_part.get((k, film.year), set()) for k in pieces))),
            (
                "year+-1",
                set().union(
                    *(by_key.get((k, y), set()) for k in keys for y in near_years(film.year))
                ),
            ),
        ]
        kind, movie = "unmatched", None
        for rule, candidates in rules:
            if len(candidates) == 1:
                kind, movie = rule, next(iter(candidates))
                break
        matches.append(Match(film.id, movie, kind))
    return matches


def match_report(matches: Sequence[Match], ml100k: Sequence[Film], ml1m: Sequence[Film]) -> dict:
    """Counts per rule, the films that share an ML-1M id, and every non-exact match by title."""
    counts = Counter(m.kind for m in matches)
    title100 = {f.id: f"{f.title} ({f.year})" for f in ml100k}
    title1m = {f.id: f"{f.title} ({f.year})" for f in ml1m}
    shared: dict[str, list[str]] = defaultdict(list)
    for m in matches:
        if m.ml1m_movie is not None:
            shared[m.ml1m_movie].append(m.ml100k_item)
    return {
        "ml100k_items": len(matches),
        "ml1m_movies": len(ml1m),
        "counts": {kind: counts.get(kind, 0) for kind in MATCH_KINDS},
        "ml1m_movies_matched_twice": {
            m: items for m, items in sorted(shared.items()) if len(items) > 1
        },
        "not_exact": [
            {
                "ml100k_item": m.ml100k_item,
                "ml100k_title": title100[m.ml100k_item],
                "kind": m.kind,
                "ml1m_movie": m.ml1m_movie,
                "ml1m_title": title1m.get(m.ml1m_movie) if m.ml1m_movie else None,
            }
            for m in matches
            if m.kind != "exact"
        ],
    }


# ---------------------------------------------------------------------------------------------
# The map file


def write_map(matches: Sequence[Match], path: str | Path) -> Path:
    """Write the map: header :data:`MAP_HEADER`, one line per match, ``\\n`` line ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(MAP_HEADER)]
    lines += [f"{m.ml100k_item}\t{m.ml1m_movie or ''}\t{m.kind}" for m in matches]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_map(path: str | Path) -> list[Match]:
    """Read a map written by :func:`write_map`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if tuple(lines[0].split("\t")) != MAP_HEADER:
        raise ConversionError(f"{path} does not start with the header {' '.join(MAP_HEADER)!r}.")
    out = []
    for line in lines[1:]:
        item, movie, kind = line.split("\t")
        out.append(Match(item, movie or None, kind))
    return out


def link_ml100k_to_ml1m(
    *, ml1m_movies: str | Path, out: str | Path, ml100k_items: str | Path | None = None
) -> dict:
    """Read both film lists, match them, write the map to ``out``; return the report."""
    ml100k = read_ml100k_items(ml100k_items or default_ml100k_items())
    ml1m = read_ml1m_movies(ml1m_movies)
    matches = match_films(ml100k, ml1m)
    write_map(matches, out)
    return match_report(matches, ml100k, ml1m)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset_tools.movielens_link``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_tools.movielens_link",
        description="Map ml-100k item ids to MovieLens-1M movie ids by title and year (the ids "
        "RecBole's ml-100k.link is keyed by).",
        epilog="Example: python -m dataset_tools.movielens_link --ml1m-movies ml-1m/movies.dat "
        "--out recbole_mm/data/ml-100k-to-ml-1m.tsv",
    )
    parser.add_argument(
        "--ml1m-movies", type=Path, required=True, help="ML-1M's movies.dat (UTF-8 or latin-1)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the map file to write (TSV)")
    parser.add_argument(
        "--ml100k-items",
        type=Path,
        help="RecBole's ml-100k.item (default: the one inside the installed recbole)",
    )
    parser.add_argument("--report", type=Path, help="also write the full report here (JSON)")
    parser.add_argument("--quiet", action="store_true", help="no summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dataset_tools.movielens_link``."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> None:
        report = link_ml100k_to_ml1m(
            ml1m_movies=args.ml1m_movies, out=args.out, ml100k_items=args.ml100k_items
        )
        counts = ", ".join(f"{kind} {n}" for kind, n in report["counts"].items())
        logger.info("%d ml-100k items: %s", report["ml100k_items"], counts)
        for row in report["not_exact"]:
            logger.info(
                "%-9s %5s %-60s -> %s %s",
                row["kind"],
                row["ml100k_item"],
                row["ml100k_title"],
                row["ml1m_movie"] or "-",
                row["ml1m_title"] or "",
            )
        twice = report["ml1m_movies_matched_twice"]
        logger.info("%d ML-1M films matched by two ml-100k items: %s", len(twice), twice)
        if args.report:
            args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            logger.info("wrote %s", args.report)
        logger.info("wrote %s", args.out)

    return run_cli(body, argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
