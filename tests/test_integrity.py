"""Damaged derived stores: `scenerec check` finds each case, opening a Recommender rebuilds it.

Each case damages a copy of the demo store the way disks and killed processes do, on real chromadb
files: a deleted HNSW folder (chroma then answers 1 of 5 neighbours while `count()` is unchanged), a
truncated HNSW file, a truncated chroma.sqlite3, and a missing, corrupt or old-format BM25 file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scenerec.agent.recommender import Recommender
from scenerec.cli import cli
from scenerec.paths import DataPaths
from scenerec.settings import EmbeddingSettings, Settings, StoreSettings, load_settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.integrity import check_data_dir

SCENE = "office"


def vector_segment(chroma_dir: Path, scene: str) -> Path:
    """The folder holding a collection's HNSW files (named by its vector segment's id)."""
    with sqlite3.connect(chroma_dir / "chroma.sqlite3") as conn:
        row = conn.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE s.scope = 'VECTOR' AND c.name = ?",
            (f"scene-{scene}",),
        ).fetchone()
    return chroma_dir / row[0]


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def delete_hnsw_folder(paths: DataPaths) -> None:
    shutil.rmtree(vector_segment(paths.chroma_dir, SCENE))


def truncate_hnsw_file(paths: DataPaths) -> None:
    truncate(vector_segment(paths.chroma_dir, SCENE) / "data_level0.bin", 1000)


def truncate_hnsw_metadata(paths: DataPaths) -> None:
    truncate(vector_segment(paths.chroma_dir, SCENE) / "index_metadata.pickle", 100)


def truncate_chroma_sqlite(paths: DataPaths) -> None:
    db = paths.chroma_dir / "chroma.sqlite3"
    truncate(db, db.stat().st_size // 2)


def delete_bm25(paths: DataPaths) -> None:
    (paths.lexical_dir / f"{SCENE}.npz").unlink()


def corrupt_bm25(paths: DataPaths) -> None:
    truncate(paths.lexical_dir / f"{SCENE}.npz", 200)


def old_format_bm25(paths: DataPaths) -> None:
    header = json.dumps({"format": 1, "ids": ["x"], "vocabulary": {"x": 0}}).encode()
    with open(paths.lexical_dir / f"{SCENE}.npz", "wb") as out:
        np.savez(out, data=np.ones(1), indices=np.zeros(1, np.int32), indptr=np.array([0, 1]),
                 shape=np.array([1, 1]), header=np.frombuffer(header, dtype=np.uint8))


DAMAGE: dict[str, tuple[Callable[[DataPaths], None], str]] = {
    "deleted HNSW folder": (delete_hnsw_folder, "chroma"),
    "truncated HNSW data file": (truncate_hnsw_file, "chroma"),
    "truncated HNSW metadata": (truncate_hnsw_metadata, "chroma"),
    "truncated chroma sqlite": (truncate_chroma_sqlite, "chroma"),
    "deleted BM25 file": (delete_bm25, "bm25"),
    "corrupt BM25 file": (corrupt_bm25, "bm25"),
    "old-format BM25 file": (old_format_bm25, "bm25"),
}


@pytest.fixture
def damaged_copy(tmp_path: Path, demo_settings: Settings) -> Callable[[str], Settings]:
    def make(case: str) -> Settings:
        data_dir = tmp_path / case.replace(" ", "-")
        shutil.copytree(demo_settings.data_dir, data_dir)
        DAMAGE[case][0](DataPaths(data_dir))
        return load_settings(data_dir=data_dir)

    return make


def full_answers(rec: Recommender) -> None:
    """What a user would see: full lists from recommend and search, and chroma finding an item itself."""
    user = rec.items.users(1)[0]
    assert len(rec.recommend(user, SCENE, 10)) == 10
    hits = rec.search_items("pencil sharpener", scene=SCENE, k=10)
    assert len(hits) == 10 and all(h.scene == SCENE for h in hits)
    first = rec.items.items_in_scene(SCENE)[0].item_id
    rows = rec.vectors.query(SCENE, rec.item_vectors([first]), 5)
    assert len(rows[0]) == 5 and rows[0][0][1] > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_found_and_repaired_on_open(
    case: str, damaged_copy: Callable[[str], Settings], encoder: Encoder
) -> None:
    settings = damaged_copy(case)
    store = DAMAGE[case][1]
    found = check_data_dir(settings.data_dir, StoreSettings(), EmbeddingSettings())
    assert not found.ok
    assert {p.store for p in found.problems} == {store}
    assert all(p.scene in (SCENE, None) for p in found.problems)

    with Recommender(settings, encoder=encoder) as rec:
        full_answers(rec)
    after = check_data_dir(settings.data_dir, StoreSettings(), EmbeddingSettings())
    assert after.ok, after.problems


@pytest.mark.slow
def test_check_command_reports_then_repairs(damaged_copy: Callable[[str], Settings], encoder: Encoder) -> None:
    settings = damaged_copy("deleted HNSW folder")
    runner = CliRunner()
    args = ["check", "--data-dir", str(settings.data_dir)]
    first = runner.invoke(cli, args)
    assert first.exit_code == 1
    assert "problem: chroma office:" in first.output  # a short list, or an item not finding itself
    repaired = runner.invoke(cli, [*args, "--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "repaired: chroma collection of scene 'office' rebuilt" in repaired.output
    assert runner.invoke(cli, args).exit_code == 0
    with Recommender(settings, encoder=encoder) as rec:
        assert rec.last_check is not None and rec.last_check.ok
        full_answers(rec)


def test_an_undamaged_store_passes_the_check(demo_settings: Settings) -> None:
    report = check_data_dir(demo_settings.data_dir, StoreSettings(), EmbeddingSettings())
    assert report.ok and report.problems == []
