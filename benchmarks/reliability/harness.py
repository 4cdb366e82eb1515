"""Kill-and-recover harness shared by tests/test_crash_safety.py and benchmarks/reliability/run.py.

A driver subprocess (`python harness.py ingest|session ...`) prints `STAGE <name>` lines as it goes; the
harness reads them and sends SIGKILL when the chosen stage appears (after an optional delay, so the kill
lands in the middle of the next write rather than at a marker). With `pause`, the driver stops at the
marker until it is killed, so a kill inside a short transaction is certain. Then the data directory is
compared with a clean run's: the item table, every chroma collection and BM25 file must hold exactly
the catalog's items, and recommending must work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


@dataclass
class KillPoint:
    """Where to kill: the `occurrence`-th stage line starting with `stage`, then `delay_s` later."""

    stage: str
    occurrence: int = 1
    delay_s: float = 0.0
    pause: bool = False  # the driver waits at the marker (a kill inside a transaction, certainly)

    @property
    def name(self) -> str:
        pause = " (paused)" if self.pause else ""
        delay = f" +{self.delay_s:.2f}s" if self.delay_s else ""
        nth = f" #{self.occurrence}" if self.occurrence > 1 else ""
        return f"{self.stage}{nth}{delay}{pause}"


@dataclass
class KillResult:
    point: str
    killed: bool  # False: the run finished before the kill point (a miss, not a pass)
    last_stage: str
    recovered: bool = False
    lost: int = 0
    duplicated: int = 0
    detail: str = ""
    recovery_encoded: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _driver_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_until_killed(args: list[str], point: KillPoint, timeout_s: float = 300.0) -> tuple[bool, str, list[str]]:
    """Run a driver; SIGKILL it at `point`. Returns (killed, last stage seen, all lines)."""
    cmd = [sys.executable, str(HERE), *args]
    if point.pause:
        cmd += ["--pause-at", point.stage, "--pause-occurrence", str(point.occurrence)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_driver_env())
    lines: list[str] = []
    seen = 0
    last = ""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.strip()
            lines.append(line)
            last = line.removeprefix("STAGE ")  # ingest stages, or a session driver's TURN lines
            if last.startswith(point.stage):
                seen += 1
                if seen == point.occurrence:
                    if point.delay_s:
                        time.sleep(point.delay_s)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True, last, lines
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return False, last, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_driver(args: list[str], timeout_s: float = 600.0) -> list[str]:
    """Run a driver to completion; its stdout lines (CalledProcessError with stderr when it fails)."""
    done = subprocess.run(
        [sys.executable, str(HERE), *args], capture_output=True, text=True, timeout=timeout_s, env=_driver_env(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"driver {args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout.splitlines()


# --- what a data directory holds ---


def store_contents(data_dir: Path) -> dict:
    """Per scene: item ids in the item table, chroma and BM25; table counts; manifest versions."""
    from scenerec.paths import DataPaths
    from scenerec.settings import StoreSettings
    from scenerec.stores.item_store import ItemStore
    from scenerec.stores.lexical import BM25Index
    from scenerec.stores.sync import lexical_path
    from scenerec.stores.vector_store import VectorStore

    paths = DataPaths(data_dir)
    items = ItemStore(paths.catalog_db)
    try:
        vectors = VectorStore(StoreSettings(), paths.chroma_dir)
        vectors.reopen()  # read the disk, not what this process may have cached for this path
        scenes = {}
        for scene in items.scenes():
            wanted = items.hashes_in_scene(scene)
            stored = vectors.stored_hashes(scene)
            bm25 = BM25Index.load(lexical_path(paths.lexical_dir, scene)).ids
            scenes[scene] = {
                "items": len(wanted),
                "chroma": vectors.count(scene),
                "chroma_missing": len(set(wanted) - set(stored)),
                "chroma_extra": len(set(stored) - set(wanted)),
                "chroma_stale": sum(1 for i, h in wanted.items() if stored.get(i, h) != h),
                "bm25": len(bm25),
                "bm25_missing": len(set(wanted) - set(bm25)),
                "bm25_extra": len(bm25) - len(set(bm25) & set(wanted)),
            }
        manifest = items.manifest()
        return {
            "tables": items.counts(),
            "scenes": scenes,
            "chroma_scenes": vectors.scenes(),
            "synced": manifest.get("synced_version") == manifest.get("version"),
        }
    finally:
        items.close()


def compare(clean: dict, got: dict) -> tuple[int, int, str]:
    """(lost, duplicated, what differs) between a clean run's contents and a recovered one's."""
    lost = dup = 0
    notes = []
    for table, n in clean["tables"].items():
        have = got["tables"].get(table, 0)
        lost += max(0, n - have)
        dup += max(0, have - n)
        if have != n:
            notes.append(f"{table} {have} != {n}")
    for scene, want in clean["scenes"].items():
        have = got["scenes"].get(scene)
        if have is None:
            lost += want["items"]
            notes.append(f"scene {scene} missing")
            continue
        lost += have["chroma_missing"] + have["bm25_missing"] + have["chroma_stale"]
        dup += have["chroma_extra"] + have["bm25_extra"] + max(0, have["chroma"] - want["items"])
        if have != want:
            notes.append(f"{scene}: {have}")
    if sorted(got["chroma_scenes"]) != sorted(clean["chroma_scenes"]):
        notes.append(f"collections {got['chroma_scenes']}")
    if not got["synced"]:
        notes.append("manifest not synced")
    return lost, dup, "; ".join(notes)


def recommend_works(data_dir: Path, k: int = 10) -> str:
    """'' when recommending (and searching) in a fresh process-free open works; else what failed."""
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=data_dir, embedding={"show_progress": False})
    with Recommender(settings) as rec:
        user = rec.items.users(1)[0]
        for scene in rec.items.scenes():
            got = rec.recommend(user, scene, k)
            if len(got) != k:
                return f"recommend in {scene} returned {len(got)} of {k}"
    return ""


# --- drivers (run in the killed subprocess) ---


def _stage(name: str, pause_at: str | None, occurrence: int, counter: list[int]) -> None:
    print(f"STAGE {name}", flush=True)
    if pause_at is not None and name.startswith(pause_at):
        counter[0] += 1
        if counter[0] == occurrence:
            time.sleep(3600)  # until the harness kills us


def _ingest_driver(argv: list[str]) -> None:
    import argparse

    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("catalog")
    parser.add_argument("--preload", action="store_true", help="load the encoder before ingesting")
    parser.add_argument("--pause-at")
    parser.add_argument("--pause-occurrence", type=int, default=1)
    args = parser.parse_args(argv)
    settings = load_settings(data_dir=args.data_dir, embedding={"show_progress": False})
    encoder = None
    if args.preload:
        from scenerec.stores.embeddings import make_encoder

        encoder = make_encoder(settings.embedding)
    counter = [0]
    report = ingest_catalog(
        Path(args.catalog), settings, encoder=encoder,
        on_stage=lambda s: _stage(s, args.pause_at, args.pause_occurrence, counter),
    )
    print("REPORT " + report.model_dump_json(), flush=True)


SESSION_MESSAGES = [
    "recommend something", "more like 2", "cheaper", "hide the first", "why 1", "show me something else",
    "more like 1", "not paper",
]


def _session_driver(argv: list[str]) -> None:
    """Open (or resume) a session and run turns until killed, printing `TURN n` after each."""
    import argparse

    from scenerec.agent.conversation import Agent
    from scenerec.llm import make_backend
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import LLMSettings, TUISettings, load_settings
    from scenerec.stores.session_store import SessionStore

    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--session")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--user")
    args = parser.parse_args(argv)
    settings = load_settings(data_dir=args.data_dir, embedding={"show_progress": False})
    recommender = Recommender(settings)
    store = SessionStore(recommender.paths.sessions_db)
    backend = make_backend(LLMSettings(backend="fake"))
    agent = Agent(recommender, store, TUISettings(llm_explanations=False), backend)
    session = agent.resume(args.session) if args.session else agent.start(args.user)
    print(f"SESSION {session.session_id}", flush=True)
    for n in range(args.turns):
        reply = agent.turn(session, SESSION_MESSAGES[n % len(SESSION_MESSAGES)])
        if reply.error:
            print(f"ERROR {reply.error}", flush=True)
        print(f"TURN {session.turns} {json.dumps([r.item_id for r in reply.recommendations])}", flush=True)
    print("DONE", flush=True)


def _score_driver(argv: list[str]) -> None:
    """Score every stored user in every scene a few times over (a batch job sharing the directory)."""
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    data_dir, rounds = argv[0], int(argv[1])
    settings = load_settings(data_dir=data_dir, embedding={"show_progress": False})
    with Recommender(settings) as rec:
        users = rec.items.users()
        for _ in range(rounds):
            for scene in rec.items.scenes():
                result = rec.score_batch(users, scene, 10)
                print(f"SCORED {scene} {len(result)}", flush=True)
    print("DONE", flush=True)


def result_dict(result: KillResult) -> dict:
    return asdict(result)


if __name__ == "__main__":
    drivers = {"ingest": _ingest_driver, "session": _session_driver, "score": _score_driver}
    drivers[sys.argv[1]](sys.argv[2:])
