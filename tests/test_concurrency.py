"""Several processes on one data directory: a reader notices a newer store, and two chat sessions, a
batch scoring job and a re-ingest run side by side without a lock error, a crash or mixed sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scenerec.paths import DataPaths, demo_catalog_dir
from scenerec.recommend.recommender import Recommender
from scenerec.settings import EmbeddingSettings, Settings, StoreSettings, load_settings
from scenerec.stores.embedding_cache import EmbeddingCache, encode_with_cache
from scenerec.stores.embeddings import Encoder
from scenerec.stores.integrity import check_data_dir
from scenerec.stores.session_store import SessionStore

from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

REPO = Path(__file__).parents[1]
HARNESS = REPO / "benchmarks" / "reliability" / "harness.py"
NEW_ITEM = ("f11", "films", "the zanzibar harmonica quartet", "documentary music harmonica zanzibar")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _scenerec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenerec", *args], capture_output=True, text=True, timeout=300, env=_env()
    )


@pytest.mark.slow
def test_a_reader_sees_vectors_another_process_ingests(
    tiny_settings: Settings, tmp_path: Path, encoder: Encoder
) -> None:
    reader = Recommender(tiny_settings, encoder=encoder)
    reader.search_items("dragons", scene="films", k=3)  # chroma now serves this process from memory

    # another process ingests one more film (its vector cached beforehand: no model load there)
    bigger = write_catalog(tmp_path / "bigger", TINY_ITEMS + [NEW_ITEM], TINY_HISTORIES)
    from scenerec.catalog import load_catalog

    with EmbeddingCache(DataPaths(tiny_settings.data_dir).embedding_cache_db) as cache:
        encode_with_cache(encoder, cache, {i.content_hash: i.document for i in load_catalog(bigger).items})
    done = _scenerec("ingest", str(bigger), "--data-dir", str(tiny_settings.data_dir))
    assert done.returncode == 0, done.stderr

    hits = reader.search_items("zanzibar harmonica", scene="films", k=3)
    assert hits[0].item_id == "f11"
    dense = reader.vectors.query("films", reader.item_vectors(["f11"]), 1)  # chroma itself, reopened
    assert dense[0][0][0] == "f11" and dense[0][0][1] > 0.99
    assert reader.vectors.count("films") == 11
    reader.close()


def _demo_users(data_dir: Path, n: int) -> list[str]:
    with Recommender(load_settings(data_dir=data_dir)) as rec:
        return [u for u in rec.items.users() if len(rec.items.history(u).entries) >= 3][:n]


@pytest.mark.slow
def test_two_chats_a_batch_job_and_an_ingest_in_parallel(tmp_path: Path, demo_settings: Settings) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, data_dir)
    alice, bob = _demo_users(data_dir, 2)
    turns = 10

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )

    procs = {
        "chat-1": start(str(HARNESS), "session", str(data_dir), "--user", alice, "--turns", str(turns)),
        "chat-2": start(str(HARNESS), "session", str(data_dir), "--user", bob, "--turns", str(turns)),
        "score": start(str(HARNESS), "score", str(data_dir), "3"),
        "ingest": start("-m", "scenerec", "ingest", str(demo_catalog_dir()), "--data-dir", str(data_dir)),
    }
    results = {name: (*p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
    for name, (out, err, code) in results.items():
        assert code == 0, f"{name} failed: {err[-1500:]}"
        assert "locked" not in err.lower() and "Traceback" not in err, f"{name}: {err[-1500:]}"

    sessions = {}
    for name in ("chat-1", "chat-2"):
        out = results[name][0].splitlines()
        assert out[-1] == "DONE" and not any(line.startswith("ERROR") for line in out)
        sessions[name] = next(line.split()[1] for line in out if line.startswith("SESSION "))
    with SessionStore(DataPaths(data_dir).sessions_db) as store:
        listed = store.list_sessions()
        first, second = store.load(sessions["chat-1"]), store.load(sessions["chat-2"])
        assert len(store.turns(first.session_id)) == len(store.turns(second.session_id)) == turns
    assert {s.session_id for s in listed} == set(sessions.values())
    assert (first.user_id, second.user_id) == (alice, bob)  # each session kept its own user and turns
    assert first.turns == second.turns == turns

    users = len(_all_users(data_dir))
    scored = [line for line in results["score"][0].splitlines() if line.startswith("SCORED")]
    assert len(scored) == 6 and all(line.endswith(f" {users}") for line in scored)
    assert check_data_dir(data_dir, StoreSettings(), EmbeddingSettings()).ok


def _all_users(data_dir: Path) -> list[str]:
    with Recommender(load_settings(data_dir=data_dir)) as rec:
        return rec.items.users()

