"""Catalog readers: the shipped demo catalog, the scene-catalog and RecBole formats, and every error."""

from __future__ import annotations

import json
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest

from scenerec.catalog import MAX_LINE_BYTES, Catalog, load_catalog, read_recbole, read_scene_catalog
from scenerec.errors import CatalogError
from scenerec.paths import demo_catalog_dir

FIXTURES = Path(__file__).parent / "fixtures"
SCENE_FIXTURE = FIXTURES / "scene_catalog"
RECBOLE_FIXTURE = FIXTURES / "recbole" / "tiny"

GOOD_ITEMS = (SCENE_FIXTURE / "items.jsonl").read_bytes()
GOOD_INTERACTIONS = (SCENE_FIXTURE / "interactions.csv").read_bytes()
GOOD_CASES = (SCENE_FIXTURE / "cases.jsonl").read_bytes()

ITEM_B1 = b'{"item_id": "b1", "scene": "books", "title": "the hobbit"}\n'
ITEM_F1 = b'{"item_id": "f1", "scene": "films", "title": "chef"}\n'
HEADER = b"user_id,item_id,scene,position\n"


def scene_catalog(
    tmp_path: Path,
    items: bytes | None = GOOD_ITEMS,
    interactions: bytes | None = GOOD_INTERACTIONS,
    cases: bytes | None = None,
) -> Path:
    """Write a scene catalog from raw bytes (None leaves the file out)."""
    directory = tmp_path / "catalog"
    directory.mkdir(exist_ok=True)
    for name, content in (("items.jsonl", items), ("interactions.csv", interactions), ("cases.jsonl", cases)):
        if content is not None:
            (directory / name).write_bytes(content)
    return directory


def expect_error(directory: Path, file: str, line: int | None, field: str | None, **kwargs) -> CatalogError:
    """Read `directory` and check the CatalogError names the file, the line and the field."""
    with pytest.raises(CatalogError) as caught:
        read_scene_catalog(directory, **kwargs)
    error = caught.value
    assert error.path.name == file
    assert error.line == line
    assert error.field == field
    message = str(error)
    assert file in message
    if line is not None:
        assert f"line {line}" in message
    assert "\n" not in message
    return error


# --- the shipped demo catalog -------------------------------------------------------------------


def readme_count(text: str, label: str) -> int:
    match = re.search(rf"^- {label}: ([\d,]+)", text, re.MULTILINE)
    assert match, label
    return int(match.group(1).replace(",", ""))


def test_demo_catalog_matches_its_readme() -> None:
    catalog = load_catalog(demo_catalog_dir())
    readme = (demo_catalog_dir() / "README.md").read_text(encoding="utf-8")
    assert catalog.scenes == ["arts", "office"]
    assert len(catalog.items) == readme_count(readme, "items")
    assert len(catalog.interactions) == readme_count(readme, "interactions")
    for scene in catalog.scenes:
        row = re.search(rf"^\| `{scene}` \| ([\d,]+) \|", readme, re.MULTILINE)
        assert row
        assert sum(i.scene == scene for i in catalog.items) == int(row.group(1).replace(",", ""))
    assert len(catalog.items) <= 3500
    users = {i.user_id for i in catalog.interactions}
    splits = {prefix: {u for u in users if u.startswith(prefix)} for prefix in ("tr", "va", "te")}
    assert len(splits["tr"]) == 200 and len(splits["va"]) == 30 and len(splits["te"]) == 30
    assert f"{len(splits['tr'])} train, {len(splits['va'])} valid, {len(splits['te'])} test" in readme


def test_demo_catalog_cases_reference_known_items() -> None:
    catalog = load_catalog(demo_catalog_dir())
    scene_of = {item.item_id: item.scene for item in catalog.items}
    assert len(catalog.cases) == 120
    assert {c.split for c in catalog.cases} == {"valid", "test"}
    for case in catalog.cases:
        assert scene_of[case.target_item] == case.target_scene
        assert all(item_id in scene_of for item_id in case.history)
        assert case.split == ("valid" if case.user_id.startswith("va") else "test")
    for user in {i.user_id for i in catalog.interactions}:
        assert {i.scene for i in catalog.interactions if i.user_id == user} == {"arts", "office"}


def test_demo_catalog_is_small() -> None:
    size = sum(p.stat().st_size for p in demo_catalog_dir().iterdir())
    assert size < 1.5 * 1024 * 1024


# --- scene catalog: good input ------------------------------------------------------------------


def test_reads_scene_catalog_fixture() -> None:
    catalog = read_scene_catalog(SCENE_FIXTURE)
    assert isinstance(catalog, Catalog)
    assert catalog.source == SCENE_FIXTURE
    assert catalog.scenes == ["books", "films"]
    assert [i.item_id for i in catalog.items] == ["b1", "b2", "b3", "f1", "f2", "f3"]
    assert catalog.items[0].text == "fantasy novel dragons"  # the extra "price" key is ignored
    assert catalog.items[1].text == "" and catalog.items[2].text == ""  # missing and null text
    # BOM, reordered columns, an extra column and a blank last line are all accepted.
    assert [(i.user_id, i.item_id, i.scene, i.position) for i in catalog.interactions][:2] == [
        ("alice", "b1", "books", 0),
        ("alice", "f1", "films", 1),
    ]
    assert [c.case_id for c in catalog.cases] == ["alice-0", "bob-0"]


def test_reads_cases(tmp_path: Path) -> None:
    catalog = read_scene_catalog(scene_catalog(tmp_path, cases=GOOD_CASES))
    assert [c.case_id for c in catalog.cases] == ["alice-0", "bob-0"]
    assert catalog.cases[0].history == ["b1", "f1", "b2"]


def test_crlf_line_endings(tmp_path: Path) -> None:
    directory = scene_catalog(
        tmp_path,
        items=GOOD_ITEMS.replace(b"\n", b"\r\n"),
        interactions=GOOD_INTERACTIONS.replace(b"\n", b"\r\n"),
    )
    assert len(read_scene_catalog(directory).interactions) == 5


def test_known_items_allow_interactions_with_stored_items(tmp_path: Path) -> None:
    directory = scene_catalog(
        tmp_path, items=ITEM_B1, interactions=HEADER + b"u1,b1,books,0\nu1,x9,music,1\n"
    )
    expect_error(directory, "interactions.csv", 3, "scene")  # scene 'music' is unknown without them
    catalog = read_scene_catalog(directory, known_items={"x9": "music"})
    assert [(i.item_id, i.scene) for i in catalog.interactions] == [("b1", "books"), ("x9", "music")]
    assert catalog.scenes == ["books"]


def test_known_items_scene_must_match(tmp_path: Path) -> None:
    directory = scene_catalog(tmp_path, items=ITEM_B1, interactions=HEADER + b"u1,x9,books,0\n")
    expect_error(directory, "interactions.csv", 2, "scene", known_items={"x9": "music"})


def test_item_moving_scene_is_rejected(tmp_path: Path) -> None:
    directory = scene_catalog(tmp_path, items=ITEM_B1, interactions=HEADER)
    error = expect_error(directory, "items.jsonl", 1, "scene", known_items={"b1": "films"})
    assert "films" in error.problem


def test_cases_may_name_known_items(tmp_path: Path) -> None:
    case = case_line(user_id="u", target_scene="music", target_item="x9", history=["b1", "x8"])
    directory = scene_catalog(tmp_path, items=ITEM_B1, interactions=HEADER, cases=case)
    catalog = read_scene_catalog(directory, known_items={"x9": "music", "x8": "music"})
    assert catalog.cases[0].target_item == "x9"


# --- scene catalog: every error names file, line and field --------------------------------------


def test_missing_items_file(tmp_path: Path) -> None:
    error = expect_error(scene_catalog(tmp_path, items=None), "items.jsonl", None, None)
    assert "not found" in error.problem


def test_missing_interactions_file(tmp_path: Path) -> None:
    expect_error(scene_catalog(tmp_path, interactions=None), "interactions.csv", None, None)


def test_empty_items_file(tmp_path: Path) -> None:
    expect_error(scene_catalog(tmp_path, items=b"\n  \n"), "items.jsonl", None, None)


def test_empty_interactions_file(tmp_path: Path) -> None:
    expect_error(scene_catalog(tmp_path, interactions=b""), "interactions.csv", 1, None)


@pytest.mark.parametrize("key", ["item_id", "scene", "title"])
def test_missing_item_key(tmp_path: Path, key: str) -> None:
    record = {"item_id": '"b2"', "scene": '"books"', "title": '"t"'}
    del record[key]
    line = ("{" + ", ".join(f'"{k}": {v}' for k, v in record.items()) + "}\n").encode()
    error = expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, key)
    assert key in error.problem


def test_bad_json(tmp_path: Path) -> None:
    expect_error(scene_catalog(tmp_path, items=ITEM_B1 + b'{"item_id": "b2",\n'), "items.jsonl", 2, None)


@pytest.mark.parametrize("line", [b"[1, 2]", b'"just a string"', b"42", b"null"])
def test_json_line_not_an_object(tmp_path: Path, line: bytes) -> None:
    error = expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line + b"\n"), "items.jsonl", 2, None)
    assert "object" in error.problem


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(tmp_path: Path, constant: bytes) -> None:
    line = b'{"item_id": "b2", "scene": "books", "title": "t", "price": ' + constant + b"}\n"
    error = expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, None)
    assert constant.lstrip(b"-").decode() in error.problem


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json(tmp_path: Path, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    line = b'{"item_id": "b2", "scene": "books", "title": "t", "extra": ' + nested + b"}\n"
    error = expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, None)
    assert "nested" in error.problem


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", b"7"), ("title", b"null"), ("item_id", b"12"), ("scene", b"[]"), ("text", b"{}")],
)
def test_wrong_item_types(tmp_path: Path, field: str, value: bytes) -> None:
    record = {"item_id": b'"b2"', "scene": b'"books"', "title": b'"t"', "text": b'"x"'}
    record[field] = value
    line = b"{" + b", ".join(b'"' + k.encode() + b'": ' + v for k, v in record.items()) + b"}\n"
    error = expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, field)
    assert "string" in error.problem


@pytest.mark.parametrize("title", ["", "   ", r"\t \n"])
def test_empty_title(tmp_path: Path, title: str) -> None:
    line = f'{{"item_id": "b2", "scene": "books", "title": "{title}"}}\n'.encode()
    expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, "title")


@pytest.mark.parametrize("scene", ["Books", "", "../etc", "a b", "x" * 64])
def test_bad_scene_name(tmp_path: Path, scene: str) -> None:
    line = f'{{"item_id": "b2", "scene": "{scene}", "title": "t"}}\n'.encode()
    expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, "scene")


def test_empty_item_id(tmp_path: Path) -> None:
    line = b'{"item_id": "", "scene": "books", "title": "t"}\n'
    expect_error(scene_catalog(tmp_path, items=ITEM_B1 + line), "items.jsonl", 2, "item_id")


def test_duplicate_item_id(tmp_path: Path) -> None:
    items = ITEM_B1 + ITEM_F1 + b'{"item_id": "b1", "scene": "books", "title": "again"}\n'
    error = expect_error(scene_catalog(tmp_path, items=items), "items.jsonl", 3, "item_id")
    assert "line 1" in error.problem


def test_non_utf8_byte(tmp_path: Path) -> None:
    items = ITEM_B1 + b'{"item_id": "b2", "scene": "books", "title": "caf\xe9"}\n'
    error = expect_error(scene_catalog(tmp_path, items=items), "items.jsonl", 2, None)
    assert "UTF-8" in error.problem


def test_non_utf8_byte_in_csv(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,books,0\nu\xff,b1,books,1\n"
    expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 3, None
    )


def test_nul_byte(tmp_path: Path) -> None:
    items = ITEM_B1 + b'{"item_id": "b2", "scene": "books", "title": "a\x00b"}\n'
    error = expect_error(scene_catalog(tmp_path, items=items), "items.jsonl", 2, None)
    assert "NUL" in error.problem


def test_nul_byte_in_csv(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1\x00,books,0\n"
    expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 2, None
    )


def test_line_over_the_limit_fails_without_reading_it_whole(tmp_path: Path) -> None:
    huge = b'{"item_id": "b2", "scene": "books", "title": "' + b"x" * (10 * 1024 * 1024) + b'"}\n'
    directory = scene_catalog(tmp_path, items=ITEM_B1 + huge)
    tracemalloc.start()
    try:
        error = expect_error(directory, "items.jsonl", 2, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "limit" in error.problem
    assert peak < 4 * MAX_LINE_BYTES  # one bounded read, never the 10 MB line


def test_line_limit_is_configurable(tmp_path: Path) -> None:
    directory = scene_catalog(tmp_path)
    expect_error(directory, "items.jsonl", 1, None, max_line_bytes=40)
    exact = len(ITEM_B1) - 1
    read_scene_catalog(scene_catalog(tmp_path, items=ITEM_B1, interactions=HEADER), max_line_bytes=exact)


@pytest.mark.parametrize("column", ["user_id", "item_id", "scene", "position"])
def test_missing_column(tmp_path: Path, column: str) -> None:
    columns = [c for c in ["user_id", "item_id", "scene", "position"] if c != column]
    interactions = (",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n").encode()
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 1, column
    )
    assert column in error.problem


def test_short_row(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,books,0\nu1,b1\n"
    expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 3, "scene"
    )


@pytest.mark.parametrize("position", ["-1", "1.5", "one", "", "+2"])
def test_bad_position(tmp_path: Path, position: str) -> None:
    interactions = HEADER + f"u1,b1,books,{position}\n".encode()
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 2, "position"
    )
    assert "non-negative integer" in error.problem


def test_empty_user_id(tmp_path: Path) -> None:
    interactions = HEADER + b",b1,books,0\n"
    expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 2, "user_id"
    )


def test_interaction_with_unknown_item(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,books,0\nu1,b404,books,1\n"
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 3, "item_id"
    )
    assert "b404" in error.problem


def test_interaction_scene_differs_from_item_scene(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,films,0\n"
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1 + ITEM_F1, interactions=interactions),
        "interactions.csv",
        2,
        "scene",
    )
    assert "books" in error.problem


def test_interaction_with_unknown_scene(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,music,0\n"
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 2, "scene"
    )
    assert "unknown scene" in error.problem


def test_interaction_with_bad_scene_name(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,Books!,0\n"
    expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 2, "scene"
    )


def test_duplicate_user_position(tmp_path: Path) -> None:
    interactions = HEADER + b"u1,b1,books,0\nu2,b1,books,0\nu1,b1,books,0\n"
    error = expect_error(
        scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions), "interactions.csv", 4, "position"
    )
    assert "line 2" in error.problem


def test_malformed_csv_quote(tmp_path: Path) -> None:
    interactions = HEADER + b'u1,"b1"x,books,0\n'
    with pytest.raises(CatalogError) as caught:
        read_scene_catalog(scene_catalog(tmp_path, items=ITEM_B1, interactions=interactions))
    assert caught.value.path.name == "interactions.csv"
    assert caught.value.line == 2


def case_line(**changes: object) -> bytes:
    """One cases.jsonl line: a valid case of the fixture, with keys changed (None drops one)."""
    record: dict[str, object] = {
        "case_id": "c",
        "split": "test",
        "user_id": "alice",
        "target_scene": "films",
        "target_item": "f1",
        "history": [],
    }
    record.update(changes)
    return (json.dumps({k: v for k, v in record.items() if v is not None}) + "\n").encode()


def test_case_missing_key(tmp_path: Path) -> None:
    case = case_line(history=None)
    expect_error(scene_catalog(tmp_path, cases=GOOD_CASES + case), "cases.jsonl", 3, "history")


def test_case_unknown_target_item(tmp_path: Path) -> None:
    case = case_line(target_item="f9")
    error = expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "target_item")
    assert "f9" in error.problem


def test_case_target_in_other_scene(tmp_path: Path) -> None:
    case = case_line(target_item="b1")
    expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "target_item")


def test_case_unknown_history_item(tmp_path: Path) -> None:
    case = case_line(history=["b1", "zz"])
    error = expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "history")
    assert "zz" in error.problem


def test_case_history_not_a_list(tmp_path: Path) -> None:
    case = case_line(history="b1")
    expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "history")


def test_case_unknown_target_scene(tmp_path: Path) -> None:
    case = case_line(target_scene="music")
    expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "target_scene")


def test_case_duplicate_id(tmp_path: Path) -> None:
    expect_error(scene_catalog(tmp_path, cases=GOOD_CASES + GOOD_CASES), "cases.jsonl", 3, "case_id")


def test_case_empty_split(tmp_path: Path) -> None:
    case = case_line(split="")
    expect_error(scene_catalog(tmp_path, cases=case), "cases.jsonl", 1, "split")


def test_errors_are_found_before_anything_is_returned(tmp_path: Path) -> None:
    """Good items and interactions, one bad case at the end: the whole read fails."""
    directory = scene_catalog(tmp_path, cases=GOOD_CASES + b"not json\n")
    expect_error(directory, "cases.jsonl", 3, None)


# --- RecBole atomic files -----------------------------------------------------------------------


def test_reads_recbole_fixture() -> None:
    catalog = read_recbole(RECBOLE_FIXTURE, scene="movies")
    assert catalog.scenes == ["movies"]
    assert catalog.cases == []
    assert [(i.item_id, i.title, i.text) for i in catalog.items] == [
        ("1", "toy story", "1995 animation comedy"),
        ("2", "goldeneye", "1995 action thriller"),
        ("3", "four rooms", "1995"),
    ]
    history = {
        user: [(i.position, i.item_id) for i in catalog.interactions if i.user_id == user]
        for user in ("u1", "u2")
    }
    assert history["u1"] == [(0, "1"), (1, "2"), (2, "3")]  # by timestamp 100, 200, 300
    assert history["u2"] == [(0, "3"), (1, "2"), (2, "1")]  # 10, then the 50 tie in file order
    assert all(i.scene == "movies" for i in catalog.interactions)


def test_load_catalog_detects_formats() -> None:
    assert load_catalog(SCENE_FIXTURE).scenes == ["books", "films"]
    assert len(load_catalog(RECBOLE_FIXTURE, scene="movies").items) == 3
    assert len(load_catalog(RECBOLE_FIXTURE / "tiny", scene="movies").items) == 3  # path prefix
    assert len(load_catalog(RECBOLE_FIXTURE / "tiny.inter", scene="movies").items) == 3


def test_load_catalog_recbole_needs_scene() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(RECBOLE_FIXTURE)
    assert caught.value.field == "scene"


def test_load_catalog_scene_catalog_rejects_other_scene() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(SCENE_FIXTURE, scene="music")
    assert caught.value.field == "scene"


def test_load_catalog_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        load_catalog(tmp_path)
    with pytest.raises(CatalogError):
        load_catalog(tmp_path / "missing")


def test_recbole_bad_scene_name() -> None:
    with pytest.raises(CatalogError) as caught:
        read_recbole(RECBOLE_FIXTURE, scene="Movies!")
    assert caught.value.field == "scene"


def recbole(tmp_path: Path, item: bytes | None = None, inter: bytes | None = None) -> Path:
    directory = tmp_path / "ds"
    shutil.copytree(RECBOLE_FIXTURE, directory)
    for old in directory.iterdir():
        old.rename(directory / f"ds{old.suffix}")
    if item is not None:
        (directory / "ds.item").write_bytes(item)
    if inter is not None:
        (directory / "ds.inter").write_bytes(inter)
    return directory


def expect_recbole_error(
    directory: Path, file: str, line: int | None, field: str | None, **kwargs
) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        read_recbole(directory, "movies", **kwargs)
    error = caught.value
    assert (error.path.name, error.line, error.field) == (file, line, field)
    assert file in str(error)
    if line is not None:
        assert f"line {line}" in str(error)
    return error


ITEM_HEADER = b"item_id:token\ttitle:token_seq\n"
INTER_HEADER = b"user_id:token\titem_id:token\ttimestamp:float\n"


def test_recbole_known_items(tmp_path: Path) -> None:
    directory = recbole(tmp_path, inter=INTER_HEADER + b"u1\t1\t5\nu1\tx9\t1\n")
    expect_recbole_error(directory, "ds.inter", 3, "item_id")
    catalog = read_recbole(directory, "movies", known_items={"x9": "books"})
    assert [(i.item_id, i.scene, i.position) for i in catalog.interactions] == [
        ("x9", "books", 0),
        ("1", "movies", 1),
    ]


def test_recbole_missing_inter_file(tmp_path: Path) -> None:
    directory = recbole(tmp_path)
    (directory / "ds.inter").unlink()
    expect_recbole_error(directory, "ds.inter", None, None)


def test_recbole_missing_item_id_column(tmp_path: Path) -> None:
    expect_recbole_error(
        recbole(tmp_path, item=b"id:token\ttitle:token_seq\n1\ta\n"), "ds.item", 1, "item_id"
    )


def test_recbole_missing_title_column(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=b"item_id:token\tbrand:token\n1\ta\n"), "ds.item", 1, "title")


def test_recbole_bad_header_field(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=b"item_id:token\ttitle\n1\ta\n"), "ds.item", 1, "title")


def test_recbole_wrong_column_count(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=ITEM_HEADER + b"1\ta\n2\tb\textra\n"), "ds.item", 3, None)


def test_recbole_empty_title(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=ITEM_HEADER + b"1\t  \n"), "ds.item", 2, "title")


def test_recbole_duplicate_item(tmp_path: Path) -> None:
    error = expect_recbole_error(
        recbole(tmp_path, item=ITEM_HEADER + b"1\ta\n1\tb\n"), "ds.item", 3, "item_id"
    )
    assert "line 2" in error.problem


def test_recbole_empty_items(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=ITEM_HEADER), "ds.item", None, None)


def test_recbole_bad_timestamp(tmp_path: Path) -> None:
    directory = recbole(tmp_path, inter=INTER_HEADER + b"u1\t1\t5\nu1\t2\tsoon\n")
    expect_recbole_error(directory, "ds.inter", 3, "timestamp")


def test_recbole_nan_timestamp(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, inter=INTER_HEADER + b"u1\t1\tnan\n"), "ds.inter", 2, "timestamp")


def test_recbole_unknown_item(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, inter=INTER_HEADER + b"u1\t99\t5\n"), "ds.inter", 2, "item_id")


def test_recbole_missing_user_column(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, inter=b"item_id:token\n1\n"), "ds.inter", 1, "user_id")


def test_recbole_non_utf8(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path, item=ITEM_HEADER + b"1\ta\n2\t\xff\n"), "ds.item", 3, None)


def test_recbole_without_timestamp_keeps_file_order(tmp_path: Path) -> None:
    directory = recbole(tmp_path, inter=b"user_id:token\titem_id:token\nu1\t3\nu1\t1\nu1\t2\n")
    catalog = read_recbole(directory, "movies")
    assert [i.item_id for i in catalog.interactions] == ["3", "1", "2"]
    assert [i.position for i in catalog.interactions] == [0, 1, 2]


def test_recbole_item_moving_scene_is_rejected(tmp_path: Path) -> None:
    expect_recbole_error(recbole(tmp_path), "ds.item", 2, "item_id", known_items={"1": "books"})
