"""Damaged derived stores: `scenerec check` finds each case, opening a Recommender rebuilds it.

Each case damages a copy of the demo store the way disks and killed processes do, on real chromadb
files: a deleted HNSW folder (chroma then answers 1 of 5 neighbours while `count()` is unchanged), a
truncated HNSW file, a truncated chroma.sqlite3, and a missing, corrupt or old-format BM25 file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scenerec.paths import DataPaths
from scenerec.recommend.recommender import Recommender
from scenerec.settings import EmbeddingSettings, Settings, StoreSettings, load_settings
from scenerec.stores.integrity import check_data_dir

SCENE = "office"
ROOT = Path(__file__).resolve().parent.parent


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


def found_and_repaired(data_dir: str) -> None:
    """Run in a fresh process: check, open (which repairs), use, check again; print what was seen."""
    settings = load_settings(data_dir=Path(data_dir))
    found = check_data_dir(settings.data_dir, StoreSettings(), EmbeddingSettings())
    with Recommender(settings) as rec:
        full_answers(rec)
    after = check_data_dir(settings.data_dir, StoreSettings(), EmbeddingSettings())
    print(json.dumps({
        "found_ok": found.ok, "stores": sorted({p.store for p in found.problems}),
        "scenes": sorted({str(p.scene) for p in found.problems}), "after_ok": after.ok,
        "after": [str(p) for p in after.problems],
    }))


def in_fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    # chromadb's native code once crashed the whole test process (SIGSEGV in count()) on a damaged
    # store after many other tests had opened clients in it; a process per case keeps a crash one
    # failed test, and matches how a user meets a damaged store: a new command
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_found_and_repaired_on_open(case: str, damaged_copy: Callable[[str], Settings]) -> None:
    settings = damaged_copy(case)
    run = in_fresh_process(
        f"from tests.test_integrity import found_and_repaired; found_and_repaired({str(settings.data_dir)!r})"
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert not seen["found_ok"]
    assert seen["stores"] == [DAMAGE[case][1]]
    assert set(seen["scenes"]) <= {SCENE, "None"}
    assert seen["after_ok"], seen["after"]


@pytest.mark.slow
def test_check_command_reports_then_repairs(damaged_copy: Callable[[str], Settings]) -> None:
    settings = damaged_copy("deleted HNSW folder")
    check = (
        "import sys; from scenerec.cli import main; "
        f"sys.argv = ['scenerec', 'check', '--data-dir', {str(settings.data_dir)!r}"
    )
    first = in_fresh_process(check + "]; main()")
    assert first.returncode == 1, first.stderr
    assert "problem: chroma office:" in first.stdout + first.stderr  # short list, or an item missing itself
    repaired = in_fresh_process(check + ", '--repair']; main()")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: chroma collection of scene 'office' rebuilt" in repaired.stdout + repaired.stderr
    assert in_fresh_process(check + "]; main()").returncode == 0
    run = in_fresh_process(
        f"from tests.test_integrity import found_and_repaired; found_and_repaired({str(settings.data_dir)!r})"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["found_ok"]


def test_an_undamaged_store_passes_the_check(demo_settings: Settings) -> None:
    report = check_data_dir(demo_settings.data_dir, StoreSettings(), EmbeddingSettings())
    assert report.ok and report.problems == []
