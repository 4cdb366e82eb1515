"""The same retrieval through a real `chroma run` server on 127.0.0.1 (client/server mode)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scenerec.recommend.recommender import Recommender
from scenerec.settings import StoreSettings
from scenerec.stores.ingest import ingest_catalog

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path: Path):
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(exe).exists():
        pytest.fail("the chroma CLI is not installed beside this Python; it comes with chromadb")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("chroma server did not start")
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_server_mode_gives_the_same_recommendations(tiny_catalog, make_settings, encoder, chroma_server):
    embedded = make_settings("embedded")
    served = make_settings("served", stores=StoreSettings(chroma_host="127.0.0.1", chroma_port=chroma_server))
    for settings in (embedded, served):
        ingest_catalog(tiny_catalog, settings, encoder=encoder)
    assert not (served.data_dir / "chroma").exists(), "server mode must not write an embedded store"
    with Recommender.open(settings=embedded, encoder=encoder) as a, Recommender.open(
        settings=served, encoder=encoder
    ) as b:
        assert b.vectors.count("films") == 10
        for user in ("alice", "bob", "carol", "dan"):
            for scene in ("books", "films"):
                assert [r.item_id for r in a.recommend(user, scene, 5)] == [
                    r.item_id for r in b.recommend(user, scene, 5)
                ]
