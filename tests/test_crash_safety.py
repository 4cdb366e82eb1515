"""SIGKILL during `ingest` and during a chat turn; the next run must leave exactly a clean run's stores.

The killed process is a real subprocess (benchmarks/reliability/harness.py) ingesting the shipped demo
catalog; it prints a line at each stage and is killed from outside at the chosen one (paused there, or
a few milliseconds after it so the kill lands inside the next write). The embedding cache is seeded
from the session's demo store so that only the embedding kill point encodes anything.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scenerec.paths import DataPaths, demo_catalog_dir
from scenerec.settings import Settings, load_settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.session_store import SessionStore

HARNESS_PATH = Path(__file__).parents[1] / "benchmarks" / "reliability" / "harness.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("reliability_harness", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
KillPoint = harness.KillPoint
UNCACHED = 60  # demo items whose vectors the embedding kill point must encode

KILL_POINTS = [
    KillPoint("validated", pause=True),  # nothing written but the cache
    KillPoint("encode 0", delay_s=0.4),  # in the middle of encoding (cold cache for UNCACHED items)
    KillPoint("items", pause=True),  # inside the item transaction
    KillPoint("histories", pause=True),  # user histories (the profile store) written, not committed
    KillPoint("committed", pause=True),  # new version committed, nothing synced
    KillPoint("chroma arts", pause=True),  # first chroma batch of a scene written
    KillPoint("chroma arts", delay_s=0.03),  # during the next chroma batch
    KillPoint("chroma office", occurrence=1, delay_s=0.01),  # during the second scene's chroma writes
    KillPoint("bm25 arts", pause=True),  # one BM25 file written, the other not
    KillPoint("bm25 office", delay_s=0.0),  # during the last manifest writes
    KillPoint("verify", pause=True),  # synced and checked, synced_version not yet written
]


@pytest.fixture(scope="module")
def clean(demo_settings: Settings) -> dict:
    """What a clean ingest of the demo catalog leaves (the session's demo store)."""
    return harness.store_contents(demo_settings.data_dir)


def _seeded_dir(root: Path, demo_settings: Settings, uncached: int = 0) -> Path:
    """An empty data directory whose embedding cache holds the demo's vectors, less `uncached` of them."""
    root.mkdir(parents=True)
    target = DataPaths(root).embedding_cache_db
    with sqlite3.connect(DataPaths(demo_settings.data_dir).embedding_cache_db) as source, sqlite3.connect(
        target
    ) as copy:
        source.backup(copy)
    if uncached:
        with sqlite3.connect(target) as conn:
            conn.execute(
                "DELETE FROM embeddings WHERE content_hash IN "
                "(SELECT content_hash FROM embeddings ORDER BY content_hash LIMIT ?)",
                (uncached,),
            )
    return root


@pytest.mark.slow
def test_ingest_killed_at_every_stage_recovers_to_a_clean_run(
    tmp_path: Path, demo_settings: Settings, clean: dict, encoder: Encoder
) -> None:
    assert clean["tables"]["items"] == 3000 and clean["synced"]
    outcomes = []
    for n, point in enumerate(KILL_POINTS):
        data_dir = _seeded_dir(tmp_path / f"kill-{n}", demo_settings, UNCACHED if point.stage == "encode 0" else 0)
        args = ["ingest", str(data_dir), str(demo_catalog_dir())]
        if point.stage.startswith("encode"):
            args.append("--preload")  # the model is loaded before the marker: the kill lands in encoding
        killed, last, _ = harness.run_until_killed(args, point)
        assert killed, f"{point.name}: the ingest finished before the kill point (last stage {last})"

        report = ingest_catalog(demo_catalog_dir(), load_settings(data_dir=data_dir), encoder=encoder)
        lost, duplicated, differs = harness.compare(clean, harness.store_contents(data_dir))
        outcomes.append((point.name, lost, duplicated, differs, harness.recommend_works(data_dir)))
        if point.stage.startswith("encode"):
            # resumed from the cache: at most the never-cached vectors are encoded, not all 3,000
            assert 0 < report.encoded <= UNCACHED
    failures = [o for o in outcomes if o[1] or o[2] or o[3] or o[4]]
    assert not failures, failures
    assert len(outcomes) >= 10


@pytest.mark.slow
def test_a_second_ingest_after_a_kill_mid_chroma_also_recovers_an_update(
    tmp_path: Path, demo_settings: Settings, encoder: Encoder
) -> None:
    """Killed while re-ingesting a changed catalog: the next ingest gives the changed catalog's stores."""
    data_dir = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, data_dir)
    changed = tmp_path / "catalog"
    shutil.copytree(demo_catalog_dir(), changed)
    lines = (changed / "items.jsonl").read_text(encoding="utf-8").splitlines()
    (changed / "items.jsonl").write_text("\n".join(lines[:-100]) + "\n", encoding="utf-8")  # 100 fewer
    kept = {line.split('"item_id": "')[1].split('"')[0] for line in lines[:-100] if '"item_id": "' in line}
    interactions = (changed / "interactions.csv").read_text(encoding="utf-8").splitlines()
    (changed / "interactions.csv").write_text(
        "\n".join([interactions[0]] + [row for row in interactions[1:] if row.split(",")[1] in kept]) + "\n",
        encoding="utf-8",
    )
    (changed / "cases.jsonl").unlink()

    killed, _, _ = harness.run_until_killed(["ingest", str(data_dir), str(changed)], KillPoint("committed", pause=True))
    assert killed
    ingest_catalog(changed, load_settings(data_dir=data_dir), encoder=encoder)
    got = harness.store_contents(data_dir)
    assert sum(s["items"] for s in got["scenes"].values()) == 3000  # items are never deleted by ingest
    assert all(s["chroma"] == s["items"] == s["bm25"] for s in got["scenes"].values())
    assert got["synced"] and harness.recommend_works(data_dir) == ""


@pytest.mark.slow
def test_session_killed_mid_turn_reopens_with_every_completed_turn(
    tmp_path: Path, demo_settings: Settings
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, data_dir)
    session_id = None
    completed = 0
    for delay in (0.0, 0.02, 0.08):  # a kill right after a turn, and a little into the next one
        args = ["session", str(data_dir)] + (["--session", session_id] if session_id else [])
        killed, _, lines = harness.run_until_killed(args, KillPoint("TURN", occurrence=3, delay_s=delay), timeout_s=120)
        assert killed
        turns = [int(line.split()[1]) for line in lines if line.startswith("TURN ")]
        session_id = session_id or next(line.split()[1] for line in lines if line.startswith("SESSION "))
        completed = max([completed, *turns])
        with SessionStore(DataPaths(data_dir).sessions_db) as store:
            session = store.load(session_id)
            stored = store.turns(session_id)
        assert session.turns >= completed  # every turn the driver saw completed is there
        assert [t.turn_no for t in stored] == list(range(1, session.turns + 1))  # no half-written turn
        last_list = next(t.shown for t in reversed(stored) if t.shown is not None)
        assert [r.item_id for r in session.shown] == [r.item_id for r in last_list]
        completed = session.turns
    # and it resumes: two more turns on top of what was stored
    done = subprocess.run(
        [sys.executable, str(HARNESS_PATH), "session", str(data_dir), "--session", session_id, "--turns", "2"],
        capture_output=True, text=True, timeout=120, env=harness._driver_env(), check=True,
    )
    assert "DONE" in done.stdout
    with SessionStore(DataPaths(data_dir).sessions_db) as store:
        assert store.load(session_id).turns == completed + 2
