"""Ingest writes every store or none, is idempotent, and the stores reopen in a new process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scenerec.errors import CatalogError
from scenerec.paths import DataPaths
from scenerec.recommend.recommender import Recommender
from scenerec.stores.embedding_cache import EmbeddingCache
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.item_store import ItemStore
from scenerec.stores.vector_store import VectorStore

from .conftest import TINY_ITEMS, write_catalog


def store_state(settings) -> dict:
    """Everything a user could notice about the stores: row counts, collection sizes, BM25 files."""
    paths = DataPaths(settings.data_dir)
    items = ItemStore(paths.catalog_db)
    vectors = VectorStore(settings.stores, paths.chroma_dir)
    state = {
        "rows": items.counts(),
        "collections": {s: vectors.count(s) for s in vectors.scenes()},
        "lexical": sorted(p.name for p in paths.lexical_dir.glob("*.npz")),
        "version": items.version(),
    }
    items.close()
    return state


def test_ingest_fills_every_store(tiny_settings):
    state = store_state(tiny_settings)
    assert state["rows"] == {"items": 18, "interactions": 12, "cases": 0}
    assert state["collections"] == {"books": 8, "films": 10}
    assert state["lexical"] == ["books.npz", "films.npz"]


def test_reingest_is_idempotent_and_encodes_nothing(tiny_settings, tiny_catalog, encoder):
    before = store_state(tiny_settings)
    report = ingest_catalog(tiny_catalog, tiny_settings, encoder=encoder)
    after = store_state(tiny_settings)
    assert report.encoded == 0
    assert report.upserted_vectors == 0
    assert after["rows"] == before["rows"] and after["collections"] == before["collections"]


def test_changed_title_reencodes_one_item(tiny_settings, tmp_path, encoder):
    items = [("b1", "books", "the hobbit, or there and back again", "fantasy novel")] + TINY_ITEMS[1:]
    report = ingest_catalog(write_catalog(tmp_path / "v2", items=items), tiny_settings, encoder=encoder)
    assert report.encoded == 1 and report.upserted_vectors == 1
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        assert rec.items.get_items(["b1"])["b1"].title.startswith("the hobbit, or")
        assert rec.vectors.count("books") == 8


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "items.jsonl").write_text((d / "items.jsonl").read_text() + "{not json\n"),
        lambda d: (d / "interactions.csv").write_text(
            (d / "interactions.csv").read_text() + "erin,nope,books,0\n"
        ),
        lambda d: (d / "items.jsonl").write_bytes((d / "items.jsonl").read_bytes() + b'{"item_id": "\xff"}\n'),
    ],
    ids=["bad-json", "unknown-item", "non-utf8"],
)
def test_bad_catalog_writes_nothing(tiny_settings, tmp_path, encoder, damage):
    before = store_state(tiny_settings)
    cache = EmbeddingCache(DataPaths(tiny_settings.data_dir).embedding_cache_db)
    cached_before = cache.count()
    cache.close()
    bad = write_catalog(tmp_path / "bad", items=TINY_ITEMS + [("b9", "books", "a brand new book", "")])
    damage(bad)
    with pytest.raises(CatalogError) as info:
        ingest_catalog(bad, tiny_settings, encoder=encoder)
    assert info.value.line is not None and info.value.path.parent == bad
    assert store_state(tiny_settings) == before
    cache = EmbeddingCache(DataPaths(tiny_settings.data_dir).embedding_cache_db)
    assert cache.count() == cached_before  # the failed catalog's new item was never even encoded
    cache.close()


def test_store_reopens_in_a_new_process(tiny_settings):
    code = (
        "import json, sys; from scenerec.recommend.recommender import Recommender; "
        "r = Recommender.open(sys.argv[1]); "
        "print(json.dumps([x.item_id for x in r.recommend('bob', 'films', 3)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_settings.data_dir)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout)
    assert len(ids) == 3 and all(i.startswith("f") for i in ids)
    assert {"f4", "f6"} & set(ids), "a cook should be offered the cooking films first"


def test_resync_after_interrupted_ingest(tiny_settings, encoder):
    """If a run died after committing items but before the indexes caught up, opening repairs it."""
    paths = DataPaths(tiny_settings.data_dir)
    vectors = VectorStore(tiny_settings.stores, paths.chroma_dir)
    vectors.delete("films", ["f1", "f2"])
    items = ItemStore(paths.catalog_db)
    with items.transaction():
        items.set_manifest(version=items.version() + 1)
    items.close()
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        assert rec.vectors.count("films") == 10
